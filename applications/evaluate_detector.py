"""The evaluate_detector program (installed with pip: keras-sge-evaluate-detector)."""

import sys

from keras_sge.programs.evaluate_detector import main

if __name__ == "__main__":
    sys.exit(main())
