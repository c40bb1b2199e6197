"""The programs' shared flags: range-checked numbers and the data and model groups.

Every numeric flag goes through `integer` or `number`, so that a value out of
range is refused by the argument parser with the range in the message, e.g.
`argument --steps: must be an integer >= 1, got 0`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from keras_sge.applications.registry import MODELS


def _bounds_text(minimum, maximum, *, open_minimum=False, open_maximum=False) -> str:
    low = (">" if open_minimum else ">=") if minimum is not None else None
    high = ("<" if open_maximum else "<=") if maximum is not None else None
    if low and high:
        left = "(" if open_minimum else "["
        right = ")" if open_maximum else "]"
        return f"in {left}{minimum}, {maximum}{right}"
    if low:
        return f"{low} {minimum}"
    if high:
        return f"{high} {maximum}"
    return ""


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse `type=` for an integer in `[minimum, maximum]`.

    Args:
        minimum: The smallest valid value (`None`: unbounded).
        maximum: The largest valid value (`None`: unbounded).

    Returns:
        A function of the flag's text that returns the integer or raises
        `argparse.ArgumentTypeError` naming the valid range.

    Example:

    >>> parser.add_argument("--steps", type=integer(1))
    """
    expected = " ".join(filter(None, ["an integer", _bounds_text(minimum, maximum)]))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


# Image sides below 32 px leave no pixel after the ResNets' five halvings.
image_size = integer(32)


class _OneOrTwoSizes(argparse.Action):
    """Stores one size as an int, two as `(long, short)`; refuses more."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2:
            parser.error(
                f"argument {option_string}: one size (a square) or two (long short), "
                f"got {len(values)} values"
            )
        size = values[0] if len(values) == 1 else (max(values), min(values))
        setattr(namespace, self.dest, size)


def add_detection_image_size(parser: argparse.ArgumentParser, default: int, help: str) -> None:
    """Adds `--image-size SIDE` (a square) or `--image-size LONG SHORT` (a scale).

    The value is an int, or the `(long, short)` tuple (given in either order)
    that `keras_sge.detection.pipeline.detection_dataset` takes, e.g.
    `--image-size 1333 800`, the authors' detection recipe.

    Args:
        parser: The program's parser.
        default: The default square side.
        help: The flag's help text.

    Example:

    >>> add_detection_image_size(parser, 64, "the size it was trained at")
    """

    parser.add_argument(
        "--image-size",
        type=image_size,
        nargs="+",
        action=_OneOrTwoSizes,
        default=default,
        metavar="SIZE",
        help=f"{help}: one side (a square) or long and short sides (the recipe's 1333 800)",
    )


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_minimum: bool = False,
    open_maximum: bool = False,
) -> Callable[[str], float]:
    """An argparse `type=` for a finite number between `minimum` and `maximum`.

    Args:
        minimum: The lower bound (`None`: unbounded).
        maximum: The upper bound (`None`: unbounded).
        open_minimum: Whether `minimum` itself is excluded (`> minimum`).
        open_maximum: Whether `maximum` itself is excluded (`< maximum`).

    Returns:
        A function of the flag's text that returns the float or raises
        `argparse.ArgumentTypeError` naming the valid range (NaN and
        infinities are refused).

    Example:

    >>> parser.add_argument("--lr", type=number(0, open_minimum=True))
    """
    bounds = _bounds_text(minimum, maximum, open_minimum=open_minimum, open_maximum=open_maximum)
    expected = " ".join(filter(None, ["a finite number", bounds]))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
        too_low = minimum is not None and (value <= minimum if open_minimum else value < minimum)
        too_high = maximum is not None and (value >= maximum if open_maximum else value > maximum)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def add_data_arguments(parser: argparse.ArgumentParser, *, default: str = "demo") -> Any:
    """Adds the `data` group: `--dataset`, `--data-dir` and `--manual-dir`.

    Args:
        parser: The program's parser.
        default: The default `--dataset`.

    Returns:
        The group, for the program's own data flags (splits, image size).
    """
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        default=default,
        help=f"demo | imagenet2012 | a tfds name | an image-folder path (default: {default})",
    )
    group.add_argument(
        "--data-dir", help="tfds data directory (demo: the root of its generated files)"
    )
    group.add_argument(
        "--manual-dir", help="folder of manually downloaded archives (the two ImageNet tars)"
    )
    return group


def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    saved_models: bool = True,
    default: str | None = None,
    names: list[str] | None = None,
    weights: bool = True,
    weights_help: str | None = None,
    weights_required: bool = False,
) -> Any:
    """Adds the `model` group: `--model` and `--weights`.

    Args:
        parser: The program's parser.
        saved_models: Whether `--model` may also be a `.keras` file (then any
            text is accepted and checked when the model is loaded).
        default: The default `--model` (`None`: the flag is required).
        names: The model names accepted (default: every `MODELS` name).
        weights: Whether to add `--weights`.
        weights_help: The help of `--weights` (default: what it accepts).
        weights_required: Whether `--weights` is required.

    Returns:
        The group, for the program's own model flags.
    """
    names = list(MODELS) if names is None else names
    group = parser.add_argument_group("model")
    if saved_models:
        group.add_argument(
            "--model",
            default=default,
            required=default is None,
            help=f"a .keras file, or a model name ({', '.join(names)})",
        )
    else:
        group.add_argument("--model", default=default, required=default is None, choices=names)
    if weights:
        group.add_argument(
            "--weights",
            required=weights_required,
            help=weights_help
            or "weights to load: 'imagenet' (the authors' file from the weights cache), "
            "an authors' checkpoint (.pth, .pth.tar) or a .weights.h5 file",
        )
    return group
