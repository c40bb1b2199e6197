"""The file suffixes of models and weights, for every module that tells files apart."""

# The authors' PyTorch checkpoints (`torch.save`): `.pth.tar` is theirs.
PYTORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar")
# A whole Keras model (`model.save`).
KERAS_MODEL_SUFFIX = ".keras"
# Keras weights only (`model.save_weights`).
KERAS_WEIGHTS_SUFFIX = ".weights.h5"
# Files that hold weights but no architecture.
CHECKPOINT_SUFFIXES = (*PYTORCH_SUFFIXES, KERAS_WEIGHTS_SUFFIX)
