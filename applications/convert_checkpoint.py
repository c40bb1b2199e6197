"""The convert_checkpoint program (pip: keras-sge-convert-checkpoint)."""

import sys

from keras_sge.programs.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
