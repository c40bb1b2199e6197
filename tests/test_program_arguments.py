"""Every numeric flag of every program is range-checked by the argument parser."""

import argparse

import pytest

from keras_sge.programs import arguments
from tests.helpers import load_program

PROGRAMS = ("train", "evaluate", "predict", "convert_checkpoint", "visualize", "ablate")

# What each program needs besides the flag under test, so that only that flag is wrong.
REQUIRED = {
    "train": [],
    "evaluate": ["--model", "sge_resnet50"],
    "predict": ["cat.jpg", "--model", "sge_resnet50"],
    "convert_checkpoint": ["--model", "sge_resnet50", "--weights", "w.pth", "--output", "m.keras"],
    "visualize": ["--model", "m.keras"],
    "ablate": [],
}

# (flag, bad value, the message's expected range), per program.
BAD_VALUES = {
    "train": [
        ("--epochs", "0", "an integer >= 1"),
        ("--batch-size", "-3", "an integer >= 1"),
        ("--steps-per-epoch", "1.5", "an integer >= 1"),
        ("--validation-steps", "0", "an integer >= 1"),
        ("--image-size", "16", "an integer >= 32"),
        ("--groups", "0", "an integer >= 1"),
        ("--devices", "0", "an integer >= 1"),
        ("--seed", "-1", "an integer >= 0"),
        ("--freeze-backbone-epochs", "-1", "an integer >= 0"),
        ("--lr-milestones", "0", "an integer >= 1"),
        ("--lr", "0", "a finite number > 0"),
        ("--lr", "nan", "a finite number > 0"),
        ("--momentum", "1", "a finite number in [0, 1)"),
        ("--weight-decay", "-0.0001", "a finite number >= 0"),
        ("--label-smoothing", "1.0", "a finite number in [0, 1)"),
        ("--lr-decay-factor", "0", "a finite number in (0, 1]"),
        ("--warmup-epochs", "inf", "a finite number >= 0"),
        ("--backbone-lr-multiplier", "-0.1", "a finite number >= 0"),
        ("--worker-timeout", "0", "a finite number > 0"),
    ],
    "evaluate": [
        ("--steps", "0", "an integer >= 1"),
        ("--steps", "-1", "an integer >= 1"),
        ("--batch-size", "0", "an integer >= 1"),
        ("--image-size", "abc", "an integer >= 32"),
    ],
    "predict": [
        ("--top", "0", "an integer >= 1"),
        ("--batch-size", "0", "an integer >= 1"),
    ],
    "convert_checkpoint": [
        ("--classes", "0", "an integer >= 1"),
        ("--image-size", "8", "an integer >= 32"),
    ],
    "visualize": [
        ("--image-size", "0", "an integer >= 32"),
        ("--num-images", "0", "an integer >= 1"),
        ("--statistics-images", "-2", "an integer >= 1"),
        ("--shuffle-buffer", "0", "an integer >= 1"),
        ("--num-groups", "0", "an integer >= 1"),
        ("--seed", "-5", "an integer >= 0"),
    ],
    "ablate": [
        ("--groups", "0", "an integer >= 1"),
        ("--epochs", "0", "an integer >= 1"),
        ("--steps-per-epoch", "0", "an integer >= 1"),
        ("--validation-steps", "0", "an integer >= 1"),
        ("--batch-size", "0", "an integer >= 1"),
        ("--image-size", "31", "an integer >= 32"),
        ("--lr", "-1", "a finite number > 0"),
        ("--warmup-epochs", "-1", "a finite number >= 0"),
        ("--seed", "x", "an integer >= 0"),
        ("--verbose", "3", "an integer in [0, 2]"),
    ],
}
CASES = [(name, *case) for name, cases in BAD_VALUES.items() for case in cases]


@pytest.mark.backend_independent
@pytest.mark.parametrize("program, flag, value, expected", CASES)
def test_bad_numbers_are_refused_with_the_range(program, flag, value, expected, capsys):
    parser = load_program(program).build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(REQUIRED[program] + [flag, value])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: must be {expected}, got " in message
    assert message.endswith((f"got {value}", f"got {value!r}"))


def _numeric_actions(parser):
    return [a for a in parser._actions if a.type is not None and a.type is not str]


@pytest.mark.backend_independent
@pytest.mark.parametrize("program", PROGRAMS)
def test_every_numeric_flag_is_checked_and_tested(program):
    parser = load_program(program).build_parser()
    checked = {}
    for action in _numeric_actions(parser):
        name = getattr(action.type, "__name__", repr(action.type))
        if name in ("loads",):  # --sge-options: JSON
            continue
        assert name in ("integer", "number"), f"{action.option_strings} has type={name}"
        checked[action.option_strings[0]] = action
    tested = {flag for flag, _, _ in BAD_VALUES[program]}
    assert set(checked) == tested
    # Typical valid values still pass.
    for action in checked.values():
        typical = {"integer": "32" if "image" in action.dest else "1", "number": "0.5"}
        action.type(typical[action.type.__name__])


@pytest.mark.backend_independent
def test_range_helpers_accept_their_bounds_and_nothing_outside():
    assert arguments.integer(0, 2)("0") == 0 and arguments.integer(0, 2)("2") == 2
    half_open = arguments.number(0, 1, open_maximum=True)
    assert half_open("0") == 0.0 and half_open("0.999") == 0.999
    for text, parse in [("3", arguments.integer(0, 2)), ("1", half_open), ("-0.0001", half_open)]:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            parse(text)
    with pytest.raises(argparse.ArgumentTypeError, match=r"an integer in \[0, 2\], got 3"):
        arguments.integer(0, 2)("3")
