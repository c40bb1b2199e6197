"""The evaluate program, keras_sge.programs.evaluate (installed with pip: keras-sge-evaluate)."""

import sys

from keras_sge.programs.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
