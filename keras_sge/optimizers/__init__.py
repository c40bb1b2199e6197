"""The paper's optimizer and learning-rate schedules (core: Keras only).

They live in the core so that a compiled `.keras` file written by the training
programs loads with `keras.saving.load_model(path)` after `import keras_sge`,
without the training extra.
"""

from keras_sge.optimizers import schedules
from keras_sge.optimizers.schedules import StepDecay, make_schedule
from keras_sge.optimizers.sgd import SGDWithL2

__all__ = ["SGDWithL2", "StepDecay", "make_schedule", "schedules"]
