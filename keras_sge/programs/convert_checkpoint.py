"""Convert an SGE-ResNet / ResNet PyTorch checkpoint to a Keras file.

Reads the authors' PytorchInsight checkpoint (or any state_dict of the same
architecture) safely, builds the matching Keras model and writes it as a
`.keras` model or a `.weights.h5` weights file, usable on every backend.

Example:

    python applications/convert_checkpoint.py --model sge_resnet50 \
        --weights sge_resnet50.pth.tar --output sge_resnet50.keras

Installed with pip, the same program is `keras-sge-convert-checkpoint` or
`python -m keras_sge.programs.convert_checkpoint`.
"""

from __future__ import annotations

import argparse
import sys

from keras_sge.applications import MODELS
from keras_sge.applications.suffixes import KERAS_MODEL_SUFFIX, KERAS_WEIGHTS_SUFFIX
from keras_sge.programs.arguments import add_model_arguments, image_size, integer


def build_parser() -> argparse.ArgumentParser:
    """The program's flags."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(
        parser,
        saved_models=False,
        weights_required=True,
        weights_help="PyTorch checkpoint (.pth, .pth.tar, .pt)",
    )
    parser.add_argument(
        "--output", required=True, help="output path ending in .keras or .weights.h5"
    )
    parser.add_argument(
        "--classes", type=integer(1), default=1000, help="classes of the checkpoint's fc head"
    )
    parser.add_argument(
        "--image-size",
        type=image_size,
        default=224,
        help="static input height and width of the saved model",
    )
    parser.add_argument(
        "--no-top",
        action="store_true",
        help="drop the fc head (the file's fc.* tensors are ignored)",
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The flags of the command line `argv` (default: `sys.argv[1:]`), checked."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.output.endswith((KERAS_MODEL_SUFFIX, KERAS_WEIGHTS_SUFFIX)):
        parser.error(f"--output must end in .keras or .weights.h5, got {args.output!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    builder = MODELS[args.model].builder
    size = args.image_size
    if keras.config.image_data_format() == "channels_first":
        input_shape = (3, size, size)
    else:
        input_shape = (size, size, 3)
    model = builder(
        include_top=not args.no_top,
        weights=args.weights,
        input_shape=input_shape,
        classes=args.classes,
    )
    if args.output.endswith(KERAS_MODEL_SUFFIX):
        model.save(args.output)
    else:
        model.save_weights(args.output)
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    print(
        f"Converted {args.weights} into {model.name} ({trainable:,} parameters, "
        f"input {input_shape}) and wrote {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
