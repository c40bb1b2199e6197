"""Training configuration and the two recipes (`paper` and `fast`)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from keras_sge.applications.registry import MODELS
from keras_sge.training.distribution import DEFAULT_WORKER_TIMEOUT_S
from keras_sge.training.run import setting_differences

MIXED_PRECISION = ("none", "bfloat16", "float16")
SCHEDULES = ("step", "cosine")

# The authors' recipe (their README and training script): SGD momentum 0.9, lr 0.1 per 256 images,
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

# Fine-tuning from `weights` with the `fast` recipe (the default recipe then):
# a short cosine run, the new head alone for the first epoch (backbone frozen,
# BatchNorm in inference mode), then everything, the backbone at a tenth of
# the head's learning rate.
FINETUNE_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "lr": 0.1,
    "warmup_epochs": 0.0,
    "freeze_backbone_epochs": 1,
    "backbone_lr_multiplier": 0.1,
}


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
            When given, the batches are a fixed random sample of the split
            (drawn from `seed`), the same in every epoch.
        lr: learning rate per 256 images; the peak rate is `lr * batch_size / 256`.
        momentum: SGD momentum.
        weight_decay: coupled L2 factor (added to the gradient before momentum).
        decay_all_parameters: decay BatchNorm/bias/SGE parameters too (paper) or
            only convolution and dense kernels (fast).
        label_smoothing: label smoothing of the cross-entropy.
        schedule: `"step"` (x`lr_decay_factor` at `lr_milestones`) or `"cosine"`.
        lr_milestones: epochs of the step decay.
        lr_decay_factor: factor of the step decay.
        warmup_epochs: epochs of linear warmup from 0 (may be fractional). Left
            unset, the recipe's value, lowered to `epochs / 2` when the run is
            not longer than it.
        mixed_precision: `"none"`, `"bfloat16"`, `"float16"` (with dynamic loss
            scaling) or `"auto"` (bfloat16 on a GPU/TPU, none on a CPU).
        jit: compile with XLA / torch.compile; `None` lets Keras decide ("auto").
        devices: number of local devices for data parallelism; `None` means every
            local GPU/TPU, or one CPU when there is none.
        multi_worker: several hosts, each running the same program (JAX:
            `keras.distribution.initialize()` from the `KERAS_DISTRIBUTION_*`
            variables; TensorFlow: `tf.distribute.MultiWorkerMirroredStrategy`
            from `TF_CONFIG`); only the chief writes the outputs.
        worker_timeout: with `multi_worker`, seconds to wait for every worker to
            join before giving up (naming the ones not reached).
        output_dir: where checkpoints, logs, curves and results go.
        seed: random seed of weights and data order.
        verbose: `model.fit` verbosity (`"auto"`, 0, 1 or 2).
        overwrite: start afresh in an `output_dir` that holds a finished run.
        weights: fine-tune from this file (an authors' `.pth.tar`, a `.keras`
            model or a `.weights.h5` file): the backbone is loaded, the head is
            new when the class count differs (see
            `keras_sge.applications.transfer_weights`). With weights the
            default recipe is `"fast"`, with `FINETUNE_DEFAULTS`.
        freeze_backbone_epochs: epochs at the start during which only the
            layers not loaded from `weights` (the head, new SGE layers) train;
            the loaded ones are frozen, BatchNorm in inference mode.
        backbone_lr_multiplier: learning-rate factor of the layers loaded from
            `weights` (the new layers use the full rate).
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
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_S
    output_dir: str = "runs/train"
    seed: int = 0
    verbose: str | int = "auto"
    overwrite: bool = False
    weights: str | None = None
    freeze_backbone_epochs: int | None = None
    backbone_lr_multiplier: float | None = None

    def resolved(self, *, accelerator: bool) -> TrainConfig:
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
        fine_tuning = values["weights"] is not None
        if values["recipe"] is None:
            values["recipe"] = "fast" if fine_tuning else "paper"
        if fine_tuning and values["recipe"] == "fast":
            for key, value in FINETUNE_DEFAULTS.items():
                if values[key] is None:
                    values[key] = value
        if values["freeze_backbone_epochs"] is None:
            values["freeze_backbone_epochs"] = 0
        if values["backbone_lr_multiplier"] is None:
            values["backbone_lr_multiplier"] = 1.0
        if values["recipe"] not in RECIPES:
            raise ValueError(
                f"Unknown recipe {values['recipe']!r}; expected one of {sorted(RECIPES)}."
            )
        for key, value in RECIPES[values["recipe"]].items():
            if values[key] is None:
                values[key] = value
        if values["image_size"] is None:
            values["image_size"] = 224
        if self.warmup_epochs is None and values["warmup_epochs"] >= values["epochs"]:
            # A recipe's warmup the user did not ask for: keep it below the run.
            values["warmup_epochs"] = values["epochs"] / 2
        if values["mixed_precision"] == "auto":
            values["mixed_precision"] = "bfloat16" if accelerator else "none"
        values["lr_milestones"] = [int(m) for m in values["lr_milestones"]]
        config = TrainConfig(**values)
        config._validate()
        return config

    def _validate(self) -> None:
        """Raises a `ValueError` naming the first field out of its allowed values."""
        self._validate_choices()
        self._validate_numbers()
        self._validate_optimizer_ranges()
        self._validate_fine_tuning()
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"`warmup_epochs` must be in [0, epochs={self.epochs}). "
                f"Received: {self.warmup_epochs}"
            )

    def _validate_choices(self) -> None:
        """Refuses an unknown model, mixed precision policy or schedule."""
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}; expected one of {list(MODELS)}.")
        if self.sge_options is not None and not MODELS[self.model].attention:
            raise ValueError(f"`sge_options` only applies to SGE models, not {self.model!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"Unknown mixed_precision {self.mixed_precision!r}; expected one of "
                f"{MIXED_PRECISION + ('auto',)}."
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}; expected one of {SCHEDULES}.")

    def _validate_numbers(self) -> None:
        """Refuses counts that are not positive integers, rates that are not finite."""
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
        for key in (
            "lr",
            "momentum",
            "weight_decay",
            "label_smoothing",
            "lr_decay_factor",
            "warmup_epochs",
        ):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise ValueError(f"`{key}` must be a finite number. Received: {value!r}")

    def _validate_optimizer_ranges(self) -> None:
        """Refuses a learning rate, weight decay or label smoothing out of range."""
        if self.lr <= 0:
            raise ValueError(f"`lr` must be > 0. Received: {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: {self.label_smoothing}"
            )

    def _validate_fine_tuning(self) -> None:
        """Refuses backbone freezing or learning-rate options that cannot apply."""
        if self.weights is None and (
            self.freeze_backbone_epochs or self.backbone_lr_multiplier != 1.0
        ):
            raise ValueError(
                "`freeze_backbone_epochs` and `backbone_lr_multiplier` apply to "
                "fine-tuning: pass `weights` (--weights) too."
            )
        if not isinstance(self.freeze_backbone_epochs, int) or not (
            0 <= self.freeze_backbone_epochs <= self.epochs
        ):
            raise ValueError(
                f"`freeze_backbone_epochs` must be an integer in [0, epochs={self.epochs}]. "
                f"Received: {self.freeze_backbone_epochs!r}"
            )
        if not self.backbone_lr_multiplier >= 0:
            raise ValueError(
                f"`backbone_lr_multiplier` must be >= 0. Received: {self.backbone_lr_multiplier}"
            )

    @property
    def peak_learning_rate(self) -> float:
        """`lr` scaled linearly with the global batch: `lr * batch_size / 256`."""
        return self.lr * self.batch_size / 256

    def to_json(self) -> str:
        """The configuration as indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def differences(self, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Fields (other than output_dir/verbose/overwrite) that differ from a saved run's.

        Args:
            saved: the saved run's `config.json`, without its `derived` entry.

        Returns:
            `{field: (this value, saved value)}`.
        """
        other = dataclasses.asdict(TrainConfig(**saved))
        return setting_differences(dataclasses.asdict(self), other)
