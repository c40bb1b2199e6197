"""The visualize program, keras_sge.programs.visualize (installed with pip: keras-sge-visualize)."""

import sys

from keras_sge.programs.visualize import main

if __name__ == "__main__":
    sys.exit(main())
