"""Fine-tuning in `train`: weights from a file, then a frozen-backbone phase.

The "backbone" here is every layer loaded from the weights file; the layers
left at their initialisation (a new head, SGE layers added to a plain
ResNet) train at the full learning rate from the first step.
"""

from __future__ import annotations

import dataclasses
import warnings

import keras

from keras_sge.applications.transfer import TransferReport, transfer_weights
from keras_sge.training.config import TrainConfig


@dataclasses.dataclass
class FineTuning:
    """How `train` fine-tunes a model whose backbone came from a file.

    Attributes:
        report: What was loaded, left new and skipped.
        freeze_epochs: Epochs at the start with the backbone frozen.
        backbone_lr_multiplier: Learning-rate factor of the backbone.
    """

    report: TransferReport
    freeze_epochs: int
    backbone_lr_multiplier: float

    @property
    def lr_multipliers(self) -> dict[str, float] | None:
        """`SGDWithL2(lr_multipliers=...)` for the backbone factor, or `None`."""
        if self.backbone_lr_multiplier == 1.0:
            return None
        return {"": self.backbone_lr_multiplier, **{f"{n}/": 1.0 for n in self.report.new}}

    def set_backbone_trainable(self, model: keras.Model, trainable: bool) -> None:
        """Freezes or unfreezes the loaded layers (frozen BatchNorm runs in inference mode)."""
        backbone = set(self.report.loaded)
        for layer in model.layers:
            if layer.name in backbone:
                layer.trainable = trainable

    def fit(
        self, model: keras.Model, resume_epoch: int, *args, epochs: int, callbacks=(), **kwargs
    ):
        """`model.fit` in two phases: backbone frozen, then everything.

        Args:
            model: The compiled model.
            resume_epoch: The epoch a `BackupAndRestore` callback resumes
                from (0 for a fresh run): a run resumed after the frozen
                phase goes straight to the second phase.
            *args: `model.fit` positional arguments.
            epochs: Total number of epochs.
            callbacks: `model.fit` callbacks.
            **kwargs: Other `model.fit` arguments.

        Returns:
            The `History` of the last phase.
        """
        freeze = min(self.freeze_epochs, epochs)
        if freeze <= resume_epoch:
            if freeze and resume_epoch == freeze and kwargs.get("steps_per_epoch"):
                # The backup of the frozen phase holds that phase's optimizer,
                # which the run's cannot load: continue its schedule here.
                model.optimizer.iterations.assign(freeze * kwargs["steps_per_epoch"])
            return self._fit_all(model, *args, epochs=epochs, callbacks=callbacks, **kwargs)
        backups = [c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]
        keep = {id(c): c.delete_checkpoint for c in backups}
        last_phase = freeze == epochs
        # The frozen phase has its own optimizer over the trainable subset
        # (JAX's stateless optimizer step needs every variable it was built
        # with); the run's optimizer then continues its schedule from there.
        optimizer = model.optimizer
        model.optimizer = type(optimizer).from_config(optimizer.get_config())
        self.set_backbone_trainable(model, False)
        try:
            for callback in backups:
                # The backup carries the run into the second phase.
                callback.delete_checkpoint = keep[id(callback)] and last_phase
            model.make_train_function(force=True)
            history = model.fit(*args, epochs=freeze, callbacks=callbacks, **kwargs)
        finally:
            for callback in backups:
                callback.delete_checkpoint = keep[id(callback)]
            optimizer.iterations.assign(model.optimizer.iterations)
            model.optimizer = optimizer
            self.set_backbone_trainable(model, True)
            model.make_train_function(force=True)
        if last_phase:
            return history
        return self._fit_all(
            model, *args, epochs=epochs, initial_epoch=freeze, callbacks=callbacks, **kwargs
        )

    @staticmethod
    def _fit_all(model, *args, **kwargs):
        with warnings.catch_warnings():
            # A backup written by the frozen phase holds that phase's optimizer;
            # the run's optimizer rightly does not load it.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return model.fit(*args, **kwargs)


def prepare(model: keras.Model, config: TrainConfig) -> FineTuning | None:
    """Loads `config.weights` into `model` and prints what was loaded.

    Args:
        model: The freshly built model.
        config: The resolved run configuration.

    Returns:
        A `FineTuning`, or `None` when `config.weights` is `None`.
    """
    if config.weights is None:
        return None
    report = transfer_weights(model, config.weights)
    tuning = FineTuning(report, config.freeze_backbone_epochs, config.backbone_lr_multiplier)
    print(report.summary())
    print(
        f"  fine-tuning: backbone ({len(report.loaded)} loaded layers) frozen for "
        f"{tuning.freeze_epochs} epoch(s), then trained at "
        f"{tuning.backbone_lr_multiplier:g} x the learning rate of the new layers"
    )
    return tuning
