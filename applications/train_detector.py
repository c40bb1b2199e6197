"""The train_detector program (installed with pip: keras-sge-train-detector)."""

import sys

from keras_sge.programs.train_detector import main

if __name__ == "__main__":
    sys.exit(main())
