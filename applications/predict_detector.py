"""The predict_detector program (installed with pip: keras-sge-predict-detector)."""

import sys

from keras_sge.programs.predict_detector import main

if __name__ == "__main__":
    sys.exit(main())
