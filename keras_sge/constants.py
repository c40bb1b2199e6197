"""Numbers shared across the package.

Imported by the core and by every extra, so it imports nothing itself.
"""

# Per-channel RGB mean and std of ImageNet on [0, 1] pixels, as the authors'
# PyTorch training normalised its inputs (torchvision's `Normalize`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
