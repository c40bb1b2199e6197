"""The train program, keras_sge.programs.train (installed with pip: keras-sge-train)."""

import sys

from keras_sge.programs.train import main

if __name__ == "__main__":
    sys.exit(main())
