"""Training configuration and the two recipes (`paper` and `fast`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

MODELS = (
    "sge_resnet50",
    "sge_resnet101",
    "resnet50",
    "resnet101",
    "sge_resnet18",
    "sge_resnet34",
    "resnet18",
    "resnet34",
)
MIXED_PRECISION = ("none", "bfloat16", "float16")
SCHEDULES = ("step", "cosine")

# The authors' recipe (DESIGN.md): SGD momentum 0.9, lr 0.1 per 256 images,
# 100 epochs, x0.1 at epochs 30/60/90, coupled L2 1e-4 on every parameter,
# plain cross-entropy, float32.
# `fast` is ours, for short budgets: cosine decay after a linear warmup, label
# smoothing, no decay on BatchNorm/bias/SGE parameters, mixed precision on
# accelerators ("auto" = bfloat16 on a GPU/TPU, none on a CPU).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "epochs": 100,
        "batch_size": 256,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "decay_all_parameters": True,
        "label_smoothing": 0.0,
        "schedule": "step",
        "lr_milestones": [30, 60, 90],
        "lr_decay_factor": 0.1,
        "warmup_epochs": 0.0,
        "mixed_precision": "none",
    },
    "fast": {
        "epochs": 40,
        "batch_size": 256,
        "lr": 0.2,
        "momentum": 0.9,
        "weight_decay": 5e-5,
        "decay_all_parameters": False,
        "label_smoothing": 0.1,
        "schedule": "cosine",
        "lr_milestones": [30, 60, 90],
        "lr_decay_factor": 0.1,
        "warmup_epochs": 2.0,
        "mixed_precision": "auto",
    },
}

# Defaults for the offline demo dataset, tuned so that `applications/train.py`
# with no arguments finishes in a few minutes on a 2-core CPU.
# 40 px leaves a 2x2 map in the last stage of a ResNet (32 px would leave 1x1).
DEMO_DEFAULTS: dict[str, Any] = {
    "recipe": "fast",
    "image_size": 40,
    "epochs": 3,
    "batch_size": 32,
    "steps_per_epoch": 25,
    "lr": 0.1,
    "warmup_epochs": 1.0,
}

# Fields that may change between an interrupted run and its resumption.
_RESUME_INDEPENDENT = ("output_dir", "verbose", "overwrite")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run; `None` means "recipe default".

    Args:
        dataset: `"demo"`, `"imagenet2012"`, another tfds name, or an image-folder
            path (see `keras_sge.data.load`).
        data_dir: tfds data directory.
        manual_dir: directory holding manually downloaded archives (ImageNet).
        train_split: split to train on.
        val_split: split to validate on.
        train_augmentation: shuffle and augment the training split (`False`:
            evaluation preprocessing in file order, e.g. for exact comparisons).
        image_size: training/validation crop size (224 for ImageNet; 40 for the demo).
        model: one of `sge_resnet50`, `sge_resnet101`, `resnet50`, `resnet101`
            (or the smaller `sge_resnet18`, `sge_resnet34`, `resnet18`, `resnet34`).
        groups: SGE groups (SGE models only).
        sge_options: extra `SpatialGroupEnhance` keyword arguments (SGE models only).
        recipe: `"paper"` or `"fast"`; defaults to `"fast"` on the demo data
            and `"paper"` elsewhere.
        epochs: number of epochs.
        batch_size: global batch size, split evenly across devices.
        steps_per_epoch: optimizer steps per epoch (default: one pass over the
            training split).
        validation_steps: validation batches per epoch (default: the whole split).
        lr: learning rate per 256 images; the peak rate is `lr * batch_size / 256`.
        momentum: SGD momentum.
        weight_decay: coupled L2 factor (added to the gradient before momentum).
        decay_all_parameters: decay BatchNorm/bias/SGE parameters too (paper) or
            only convolution and dense kernels (fast).
        label_smoothing: label smoothing of the cross-entropy.
        schedule: `"step"` (x`lr_decay_factor` at `lr_milestones`) or `"cosine"`.
        lr_milestones: epochs of the step decay.
        lr_decay_factor: factor of the step decay.
        warmup_epochs: epochs of linear warmup from 0 (may be fractional).
        mixed_precision: `"none"`, `"bfloat16"`, `"float16"` (with dynamic loss
            scaling) or `"auto"` (bfloat16 on a GPU/TPU, none on a CPU).
        jit: compile with XLA / torch.compile; `None` lets Keras decide ("auto").
        devices: number of local devices for data parallelism; `None` means every
            local GPU/TPU, or one CPU when there is none.
        multi_worker: several hosts, each running the same program (JAX:
            `keras.distribution.initialize()` from the `KERAS_DISTRIBUTION_*`
            variables; TensorFlow: `tf.distribute.MultiWorkerMirroredStrategy`
            from `TF_CONFIG`); only the chief writes the outputs.
        output_dir: where checkpoints, logs, curves and results go.
        seed: random seed of weights and data order.
        verbose: `model.fit` verbosity (`"auto"`, 0, 1 or 2).
        overwrite: start afresh in an `output_dir` that holds a finished run.
    """

    dataset: str = "demo"
    data_dir: str | None = None
    manual_dir: str | None = None
    train_split: str = "train"
    val_split: str = "validation"
    image_size: int | None = None
    train_augmentation: bool = True
    model: str = "sge_resnet50"
    groups: int = 64
    sge_options: dict | None = None
    recipe: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    decay_all_parameters: bool | None = None
    label_smoothing: float | None = None
    schedule: str | None = None
    lr_milestones: list[int] | None = None
    lr_decay_factor: float | None = None
    warmup_epochs: float | None = None
    mixed_precision: str | None = None
    jit: bool | None = None
    devices: int | None = None
    multi_worker: bool = False
    output_dir: str = "runs/train"
    seed: int = 0
    verbose: str | int = "auto"
    overwrite: bool = False

    def resolved(self, *, accelerator: bool) -> "TrainConfig":
        """Returns a copy with every `None` recipe field filled in and checked.

        Args:
            accelerator: whether a GPU/TPU is present (resolves
                `mixed_precision="auto"`).

        Returns:
            A validated `TrainConfig` with no `None` recipe fields.
        """
        values = dataclasses.asdict(self)
        if values["dataset"] == "demo":
            for key, value in DEMO_DEFAULTS.items():
                if values[key] is None:
                    values[key] = value
        if values["recipe"] is None:
            values["recipe"] = "paper"
        if values["recipe"] not in RECIPES:
            raise ValueError(
                f"Unknown recipe {values['recipe']!r}; expected one of {sorted(RECIPES)}."
            )
        for key, value in RECIPES[values["recipe"]].items():
            if values[key] is None:
                values[key] = value
        if values["image_size"] is None:
            values["image_size"] = 224
        if values["mixed_precision"] == "auto":
            values["mixed_precision"] = "bfloat16" if accelerator else "none"
        values["lr_milestones"] = [int(m) for m in values["lr_milestones"]]
        config = TrainConfig(**values)
        config._validate()
        return config

    def _validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}; expected one of {MODELS}.")
        if self.sge_options is not None and not self.model.startswith("sge_"):
            raise ValueError(f"`sge_options` only applies to SGE models, not {self.model!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"Unknown mixed_precision {self.mixed_precision!r}; expected one of "
                f"{MIXED_PRECISION + ('auto',)}."
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; expected one of {SCHEDULES}.")
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "groups": self.groups,
        }
        for key in ("steps_per_epoch", "validation_steps", "devices"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{key}` must be a positive integer. Received: {value!r}")
        if self.lr <= 0:
            raise ValueError(f"`lr` must be > 0. Received: {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1). Received: {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"`warmup_epochs` must be in [0, epochs={self.epochs}). "
                f"Received: {self.warmup_epochs}"
            )

    @property
    def peak_learning_rate(self) -> float:
        """`lr` scaled linearly with the global batch: `lr * batch_size / 256`."""
        return self.lr * self.batch_size / 256

    def to_json(self) -> str:
        """The configuration as indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Fields (other than output_dir/verbose/overwrite) that differ from `other`."""
        mine, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        return {
            key: (mine[key], theirs[key])
            for key in mine
            if key not in _RESUME_INDEPENDENT and mine[key] != theirs[key]
        }
