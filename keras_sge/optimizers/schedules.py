"""Learning-rate schedules of the training recipes, stepped per optimizer iteration."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sge")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-constant decay at epoch milestones, with an optional linear warmup.

    At optimizer iteration `step` (0-based) in epoch `e = step // steps_per_epoch`,
    the rate is `peak * factor ** (number of milestones <= e)`: the paper's
    `lr = 0.1 * 0.1 ** (epoch // 30)` for milestones (30, 60, 90). During the
    first `warmup_steps` iterations it is multiplied by a factor rising
    linearly from `warmup_start_factor` at step 0 to 1 at `warmup_steps`
    (from 0 by default: the linear warmup of
    `keras.optimizers.schedules.CosineDecay`; mmdetection's detection recipes
    start at 1/3).

    Args:
        peak_learning_rate: rate before the first milestone.
        steps_per_epoch: optimizer iterations per epoch.
        milestones: epochs at which the rate is multiplied by `factor`.
        factor: decay factor.
        warmup_steps: iterations of linear warmup.
        warmup_start_factor: the warmup's factor at step 0, in [0, 1].
        name: schedule name.

    Example:

    >>> schedule = StepDecay(0.1, steps_per_epoch=5005, milestones=(30, 60, 90))
    >>> rate = schedule(30 * 5005)  # first step of epoch 30: 0.01
    """

    def __init__(
        self,
        peak_learning_rate: float,
        steps_per_epoch: int,
        milestones: Sequence[int] = (30, 60, 90),
        factor: float = 0.1,
        warmup_steps: int = 0,
        name: str = "step_decay",
        warmup_start_factor: float = 0.0,
    ):
        super().__init__()
        if steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1. Received: {steps_per_epoch}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"`milestones` must be increasing. Received: {milestones}")
        if warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be >= 0. Received: {warmup_steps}")
        if not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(
                f"`warmup_start_factor` must be in [0, 1]. Received: {warmup_start_factor}"
            )
        self.warmup_start_factor = float(warmup_start_factor)
        self.peak_learning_rate = float(peak_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.milestones = [int(m) for m in milestones]
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.peak_learning_rate, "float32")
        for milestone in self.milestones:
            boundary = float(milestone * self.steps_per_epoch)
            rate = ops.where(step >= boundary, rate * self.factor, rate)
        if self.warmup_steps:
            progress = ops.minimum(step / float(self.warmup_steps), 1.0)
            start = self.warmup_start_factor
            rate = rate * (start + (1.0 - start) * progress)
        return rate

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "milestones": list(self.milestones),
            "factor": self.factor,
            "warmup_steps": self.warmup_steps,
            "warmup_start_factor": self.warmup_start_factor,
            "name": self.name,
        }


def make_schedule(
    kind: str,
    *,
    peak_learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    milestones: Sequence[int] = (30, 60, 90),
    factor: float = 0.1,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Builds the learning-rate schedule of a recipe.

    Args:
        kind: `"step"` (`StepDecay` at `milestones`) or `"cosine"`
            (`keras.optimizers.schedules.CosineDecay` from the peak to 0 after a
            linear warmup from 0).
        peak_learning_rate: the rate after warmup.
        steps_per_epoch: optimizer iterations per epoch.
        epochs: length of the run (the cosine reaches 0 at its end).
        warmup_epochs: epochs of linear warmup (may be fractional).
        milestones: epochs of the step decay.
        factor: factor of the step decay.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule` of the iteration.
    """
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    total_steps = epochs * steps_per_epoch
    if kind == "step":
        return StepDecay(
            peak_learning_rate,
            steps_per_epoch,
            milestones=milestones,
            factor=factor,
            warmup_steps=warmup_steps,
        )
    if kind == "cosine":
        if warmup_steps >= total_steps:
            raise ValueError(
                f"Warmup ({warmup_epochs} epochs = {warmup_steps} steps) must be "
                f"shorter than the run ({epochs} epochs = {total_steps} steps)."
            )
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(
                peak_learning_rate, decay_steps=total_steps, alpha=0.0
            )
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=total_steps - warmup_steps,
            alpha=0.0,
            warmup_target=peak_learning_rate,
            warmup_steps=warmup_steps,
        )
    raise ValueError(f"Unknown schedule {kind!r}; expected 'step' or 'cosine'.")
