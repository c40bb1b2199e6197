"""The predict program, keras_sge.programs.predict (installed with pip: keras-sge-predict)."""

import sys

from keras_sge.programs.predict import main

if __name__ == "__main__":
    sys.exit(main())
