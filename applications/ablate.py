"""The ablate program, keras_sge.programs.ablate (installed with pip: keras-sge-ablate)."""

import sys

from keras_sge.programs.ablate import main

if __name__ == "__main__":
    sys.exit(main())
