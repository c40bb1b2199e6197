"""Reading the SGE attention gates and feature norms out of a functional model."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence

import keras
import numpy as np
from keras import ops

from keras_sge.layers import SpatialGroupEnhance


@dataclasses.dataclass
class GateResult:
    """What one SGE layer did to a batch of images.

    Every array is a NumPy array in channels_last layout, whatever the
    layer's `data_format`.

    Attributes:
        layer_name: The layer's name; inside nested models it is prefixed
            with the enclosing models' names, e.g. `"backbone/layer4_2_sge"`.
        groups: The layer's number of groups `G`.
        gate: The attention gate `a = sigmoid(gamma * t + beta)`, float32 of
            shape `(N, H, W, G)` with values in (0, 1).
        norm_before: L2 norm over the channels of the layer's input at every
            position, shape `(N, H, W)`.
        norm_after: The same for the layer's output.
        features_before: The layer's input `(N, H, W, C)`, only when asked
            for with `return_features=True`, else `None`.
        features_after: The layer's output `(N, H, W, C)`, likewise.
    """

    layer_name: str
    groups: int
    gate: np.ndarray
    norm_before: np.ndarray
    norm_after: np.ndarray
    features_before: np.ndarray | None = None
    features_after: np.ndarray | None = None


def _contains_sge(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, SpatialGroupEnhance):
        return True
    return isinstance(layer, keras.Model) and any(_contains_sge(sub) for sub in layer.layers)


def find_sge_layers(model: keras.Model, prefix: str = "") -> list[str]:
    """Lists the names of every SpatialGroupEnhance layer of a model.

    Nested models are searched too; their layers are named
    `"<nested model name>/<layer name>"`.

    Args:
        model: A Keras model.
        prefix: Prepended to every name (used for the recursion).

    Returns:
        The layer names in the model's layer order.

    Example:

    >>> model = keras_sge.applications.SGEResNet50(weights=None)
    >>> find_sge_layers(model)[-1]
    'layer4_2_sge'
    """
    names = []
    for layer in model.layers:
        if isinstance(layer, SpatialGroupEnhance):
            names.append(prefix + layer.name)
        elif isinstance(layer, keras.Model) and _contains_sge(layer):
            names.extend(find_sge_layers(layer, prefix + layer.name + "/"))
    return names


_BLOCK_INDEX = re.compile(r"^(.*?)[._]\d+[._]")


def stage_of(layer_name: str) -> str:
    """The stage a layer belongs to: its name before the block index.

    The builders name the SGE layer of block `I` of stage `K` `layerK_I_sge`
    (the authors' `layerK.I.sge`), which belongs to stage `"layerK"`. A name
    without a block index (`"<stage>_<digits>_"` or `"<stage>.<digits>."`) is
    its own stage.

    Example:

    >>> stage_of("layer4_2_sge"), stage_of("backbone/layer1.0.sge"), stage_of("sge")
    ('layer4', 'backbone/layer1', 'sge')
    """
    match = _BLOCK_INDEX.match(layer_name)
    return match.group(1) if match else layer_name


def select_sge_layers(model: keras.Model, stage: str | None = None) -> list[str]:
    """Names of the SGE layers of one stage of a model.

    Args:
        model: A Keras model containing SpatialGroupEnhance layers.
        stage: A stage name such as `"layer4"` (every SGE layer for which
            `stage_of(name) == stage`), or an exact layer name.
            Defaults to the stage of the model's last SGE layer.

    Returns:
        The selected layer names, in the model's layer order.
    """
    names = find_sge_layers(model)
    if not names:
        raise ValueError(f"Model {model.name!r} contains no SpatialGroupEnhance layer.")
    if stage is None:
        stage = stage_of(names[-1])
    selected = [n for n in names if n == stage or stage_of(n) == stage]
    if not selected:
        stages = sorted({stage_of(n) for n in names})
        raise ValueError(
            f"No SpatialGroupEnhance layer of model {model.name!r} belongs to "
            f"stage {stage!r}. Expected a stage among {stages} or one of the "
            f"layer names {names}."
        )
    return selected


def _outer_input(nested: keras.Model):
    """The tensor that feeds a nested model in its enclosing graph.

    `keras.Model.input` is overridden to return the model's own `Input`;
    the `keras.Operation` property gives the tensor of its first call.
    """
    return keras.Operation.input.fget(nested)


def _model_input(model: keras.Model):
    try:
        return model.input
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Model {model.name!r} is not a functional model with known "
            "inputs; sge_gates reads the gates from the functional graph, so "
            "build the model with keras.Input (or a built Sequential)."
        ) from error


class FeatureTaps:
    """Reads the inputs and outputs of a model's SGE layers.

    Builds one feature extractor `keras.Model(model.input, [layer.input,
    layer.output, ...])` per (nested) functional model, once, from the
    functional graph; the model itself is not changed. Reuse one instance
    for many batches: the extractor is compiled on its first call.

    Args:
        model: A functional model containing SpatialGroupEnhance layers.
        layer_names: Only these SGE layers (names as `find_sge_layers`
            gives them); defaults to all.
    """

    def __init__(self, model: keras.Model, layer_names: Sequence[str] | None = None):
        all_names = find_sge_layers(model)
        if not all_names:
            raise ValueError(f"Model {model.name!r} contains no SpatialGroupEnhance layer.")
        if layer_names is not None:
            unknown = [n for n in layer_names if n not in all_names]
            if unknown:
                raise ValueError(
                    f"Unknown SGE layer name(s) {unknown} for model "
                    f"{model.name!r}. Expected names among {all_names}."
                )
        wanted = None if layer_names is None else set(layer_names)
        self._extractor, self._taps = self._build(model, wanted, "")

    @classmethod
    def _build(cls, model, wanted, prefix):
        taps = []  # ("sge", name, layer) or ("model", name, child taps)
        outputs = []
        for layer in model.layers:
            name = prefix + layer.name
            if isinstance(layer, SpatialGroupEnhance):
                if wanted is None or name in wanted:
                    taps.append(("sge", name, layer))
                    outputs.extend([layer.input, layer.output])
            elif isinstance(layer, keras.Model) and _contains_sge(layer):
                inner_names = find_sge_layers(layer, name + "/")
                if wanted is None or wanted.intersection(inner_names):
                    taps.append(("model", name, cls._build(layer, wanted, name + "/")))
                    outputs.append(_outer_input(layer))
        try:
            extractor = keras.Model(_model_input(model), outputs)
        except ValueError as error:
            raise ValueError(
                f"Could not read the SGE layers of model {model.name!r} from "
                "its functional graph; only functional models (and nested "
                f"functional models) are supported. Keras said: {error}"
            ) from error
        return extractor, taps

    def __call__(
        self, inputs, batch_size: int | None = None
    ) -> Iterator[tuple[str, SpatialGroupEnhance, np.ndarray, np.ndarray]]:
        """Yields `(name, layer, layer input, layer output)` as NumPy arrays.

        Args:
            inputs: A batch of model inputs.
            batch_size: Run the model in batches of this size; by default
                the whole input is one batch.
        """
        yield from self._run(self._extractor, self._taps, inputs, batch_size)

    @classmethod
    def _run(cls, extractor, taps, inputs, batch_size):
        if batch_size is None:
            values = extractor.predict_on_batch(inputs)
        else:
            values = extractor.predict(inputs, batch_size=batch_size, verbose=0)
        if not isinstance(values, (list, tuple)):  # a single output comes unwrapped
            values = [values]
        values = [np.asarray(v) for v in values]
        position = 0
        for kind, name, payload in taps:
            if kind == "sge":
                yield name, payload, values[position], values[position + 1]
                position += 2
            else:
                yield from cls._run(*payload, values[position], batch_size)
                position += 1


def _channels_last(array: np.ndarray, data_format: str) -> np.ndarray:
    if data_format == "channels_first":
        return np.transpose(array, (0, 2, 3, 1))
    return array


def sge_gates(
    model: keras.Model,
    images,
    layer_names: Sequence[str] | str | None = None,
    return_features: bool = False,
    batch_size: int | None = None,
    taps: FeatureTaps | None = None,
) -> dict[str, GateResult]:
    """Reads every SGE layer's attention gate for a batch of images.

    A feature extractor `keras.Model(model.input, [layer.input,
    layer.output, ...])` is built from the functional graph (the model is
    not changed or rebuilt), and each layer's `compute_gate` turns its input
    into the gate. Works for `SGEResNet50/101` and for any functional model
    containing `SpatialGroupEnhance`, including nested functional models.

    Args:
        model: A functional Keras model containing SpatialGroupEnhance layers.
        images: A batch of model inputs (already preprocessed, in the model's
            data format), e.g. one batch of `keras_sge.data.load(...)`.
        layer_names: Restricts the result to these SGE layers (names as
            returned by `find_sge_layers`). Defaults to every SGE layer.
        return_features: Also return the layer inputs and outputs.
        batch_size: If given, runs the images through the model in batches of
            this size (for large arrays); by default in one batch.
        taps: A `FeatureTaps(model, layer_names)` to reuse over many calls
            (its extractor is compiled once); by default a new one.

    Returns:
        A dict from layer name to `GateResult`, in the model's layer order.
        All arrays are channels_last.

    Example:

    >>> model = keras_sge.applications.SGEResNet50(weights=None)
    >>> gates = sge_gates(model, np.zeros((2, 224, 224, 3), "float32"))
    >>> gates["layer4_2_sge"].gate.shape
    (2, 7, 7, 64)
    """
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    if taps is None:
        taps = FeatureTaps(model, layer_names)
    results = {}
    for name, layer, before, after in taps(images, batch_size):
        gate = ops.convert_to_numpy(layer.compute_gate(before))
        gate = _channels_last(gate.astype("float32"), layer.data_format)
        before = _channels_last(before, layer.data_format)
        after = _channels_last(after, layer.data_format)
        results[name] = GateResult(
            layer_name=name,
            groups=layer.groups,
            gate=gate,
            norm_before=np.linalg.norm(before.astype("float32"), axis=-1),
            norm_after=np.linalg.norm(after.astype("float32"), axis=-1),
            features_before=before if return_features else None,
            features_after=after if return_features else None,
        )
    return results
