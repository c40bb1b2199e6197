"""ResNet v1.5 with an optional SGE attention slot: SGE-ResNet and baselines.

One builder makes both the paper's SGE-ResNets and the plain ResNets they
are compared with, so the only difference between the two is the SGE layer.
The architecture follows the authors' PyTorch code (torchvision-style ResNet
"v1.5": the stride sits on the 3x3 convolution of the bottleneck), so the
authors' checkpoints load into it and give the same numbers.

Layer names follow the PyTorch module paths with `.` replaced by `_`
(`layer4.2.sge` -> `layer4_2_sge`, `layer1.0.downsample.0` ->
`layer1_0_downsample_0`). Keras on the PyTorch backend cannot hold variables
whose path contains a dot, so the dotted names are not usable on every
backend; the underscore form is the same on all of them.
"""

from __future__ import annotations

import os
import re
import warnings

import keras

from keras_sge.applications.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from keras_sge.applications.suffixes import KERAS_WEIGHTS_SUFFIX, PYTORCH_SUFFIXES
from keras_sge.applications.variants import ARCHITECTURES, VARIANTS, VARIANTS_BY_NAME
from keras_sge.layers import SpatialGroupEnhance, check_groups

_DEFAULT_SIZE = 224
_MIN_SIZE = 32
_STAGE_WIDTHS = (64, 128, 256, 512)
_EXPANSION = {"basic": 1, "bottleneck": 4}
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1
_RESERVED_SGE_OPTIONS = ("groups", "data_format", "name", "dtype")
_STAGE_OUTPUT = re.compile(r"^layer([1-4])_(\d+)_out$")


def _conv_initializer():
    # Kaiming normal, fan_out, ReLU gain: PyTorch's
    # `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _conv(x, filters, kernel_size, strides, name, data_format):
    """A bias-free convolution padded symmetrically like PyTorch's."""
    padding = "valid"
    if kernel_size > 1:
        if strides == 1:
            # Odd kernel at stride 1: "same" pads (k - 1) / 2 on both sides.
            padding = "same"
        else:
            x = keras.layers.ZeroPadding2D(
                padding=kernel_size // 2, data_format=data_format, name=f"{name}_pad"
            )(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        data_format=data_format,
        name=name,
    )(x)


def _batch_norm(x, name, data_format):
    return keras.layers.BatchNormalization(
        axis=-1 if data_format == "channels_last" else 1,
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        name=name,
    )(x)


def _block(x, kind, width, strides, project, prefix, data_format, sge_kwargs):
    """One residual block; `sge_kwargs=None` leaves out the attention."""
    shortcut = x
    if kind == "bottleneck":
        x = _conv(x, width, 1, 1, f"{prefix}_conv1", data_format)
        x = _batch_norm(x, f"{prefix}_bn1", data_format)
        x = keras.layers.ReLU(name=f"{prefix}_relu1")(x)
        x = _conv(x, width, 3, strides, f"{prefix}_conv2", data_format)
        x = _batch_norm(x, f"{prefix}_bn2", data_format)
        x = keras.layers.ReLU(name=f"{prefix}_relu2")(x)
        x = _conv(x, width * 4, 1, 1, f"{prefix}_conv3", data_format)
        x = _batch_norm(x, f"{prefix}_bn3", data_format)
    else:
        x = _conv(x, width, 3, strides, f"{prefix}_conv1", data_format)
        x = _batch_norm(x, f"{prefix}_bn1", data_format)
        x = keras.layers.ReLU(name=f"{prefix}_relu1")(x)
        x = _conv(x, width, 3, 1, f"{prefix}_conv2", data_format)
        x = _batch_norm(x, f"{prefix}_bn2", data_format)
    if sge_kwargs is not None:
        x = SpatialGroupEnhance(data_format=data_format, name=f"{prefix}_sge", **sge_kwargs)(x)
    if project:
        out_channels = width * _EXPANSION[kind]
        shortcut = _conv(shortcut, out_channels, 1, strides, f"{prefix}_downsample_0", data_format)
        shortcut = _batch_norm(shortcut, f"{prefix}_downsample_1", data_format)
    x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(x)


def _input_shape(input_shape, input_tensor, include_top, data_format):
    """Validates or infers `input_shape` as `keras.applications` does."""
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        if include_top:
            size = (_DEFAULT_SIZE, _DEFAULT_SIZE)
        else:
            size = (None, None)
        if data_format == "channels_first":
            return (3, *size)
        return (*size, 3)

    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be a tuple of three integers: (height, width, "
            "channels) for channels_last or (channels, height, width) for "
            f"channels_first. Received: input_shape={input_shape}"
        )
    if data_format == "channels_first":
        channels, spatial = input_shape[0], input_shape[1:]
    else:
        channels, spatial = input_shape[-1], input_shape[:2]
    if channels is None:
        raise ValueError(
            "The channel dimension of `input_shape` must be known "
            f"(data_format={data_format!r}). Received: input_shape={input_shape}"
        )
    if channels not in (1, 3):
        warnings.warn(
            "This model usually expects 1 or 3 input channels. However, it "
            f"was passed an input_shape with {channels} input channels.",
            stacklevel=3,
        )
    if any(size is not None and size < _MIN_SIZE for size in spatial):
        raise ValueError(
            f"Input size must be at least {_MIN_SIZE}x{_MIN_SIZE}; Received: "
            f"input_shape={input_shape}"
        )
    if include_top and None in input_shape:
        raise ValueError(
            "If `include_top` is True, you should specify a static "
            f"`input_shape`. Received: input_shape={input_shape}"
        )
    return input_shape


# The first bytes of every HDF5 file Keras writes (no user block).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _weights_kind(weights) -> str | None:
    """Returns None, "keras" or "pytorch" for a valid `weights` argument."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        return "imagenet"
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            "initialization), `'imagenet'` (the authors' file from the weights "
            "cache), the path to a Keras `.weights.h5` file, or the "
            "path to a PyTorch checkpoint (`.pth`, `.pth.tar`, `.pt`, `.tar`). "
            f"Received: weights={weights!r}"
        )
    path = os.fspath(weights)
    if path.endswith(KERAS_WEIGHTS_SUFFIX):
        kind = "keras"
    elif path.endswith(PYTORCH_SUFFIXES):
        kind = "pytorch"
    else:
        raise ValueError(
            "The `weights` file must be a Keras `.weights.h5` file or a "
            "PyTorch checkpoint (`.pth`, `.pth.tar`, `.pt`, `.tar`). "
            f"Received: weights={path!r}"
        )
    if not os.path.isfile(path):
        raise ValueError(f"The `weights` file does not exist. Received: weights={path!r}")
    return kind


def _sge_kwargs(attention, groups, sge_options, stage_channels):
    if not attention:
        return None
    check_groups(groups, stage_channels, where=" (the network's stages)")
    sge_options = {} if sge_options is None else sge_options
    if not isinstance(sge_options, dict):
        raise ValueError(
            "`sge_options` must be a dict of extra SpatialGroupEnhance "
            f"arguments or None. Received: sge_options={sge_options!r}"
        )
    reserved = sorted(set(sge_options) & set(_RESERVED_SGE_OPTIONS))
    if reserved:
        raise ValueError(
            f"`sge_options` must not set {reserved}: the builder sets them "
            "(use the `groups` argument and keras.config.image_data_format()). "
            f"Received: sge_options={sge_options!r}"
        )
    return {"groups": groups, **sge_options}


def _check_head_arguments(include_top: bool, pooling: str | None, classes: int) -> None:
    """Refuses a `pooling` mode or, with the head, a `classes` count that cannot be built."""
    if pooling not in (None, "avg", "max"):
        raise ValueError(
            f"`pooling` must be one of None, 'avg' or 'max'. Received: pooling={pooling!r}"
        )
    if include_top and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive integer. Received: classes={classes!r}")


def _model_inputs(input_tensor, input_shape: tuple) -> tuple:
    """The graph's input and the model's inputs, from `input_tensor` when given.

    Args:
        input_tensor: `None`, a Keras tensor (whose source inputs become the
            model's), or another tensor to wrap in a `keras.Input`.
        input_shape: the resolved input shape.

    Returns:
        `(inputs, model_inputs)`: the tensor the stem reads and the inputs
        of the `keras.Model`.
    """
    if input_tensor is None:
        inputs = keras.Input(shape=input_shape)
        return inputs, inputs
    if keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = keras.Input(tensor=input_tensor, shape=input_shape)
    model_inputs = keras.utils.get_source_inputs(input_tensor)
    if len(model_inputs) == 1:
        model_inputs = model_inputs[0]
    return inputs, model_inputs


def _load_built_weights(
    model: keras.Model, weights: str | os.PathLike, pretrained_name: str | None
) -> None:
    """Loads `weights` into the built model; a bad cached ImageNet file is named as such.

    Args:
        model: the model just built.
        weights: the weights file (the cached ImageNet file when `pretrained_name`).
        pretrained_name: the variant of the cached ImageNet weights, or `None`.
    """
    try:
        load_weights(model, weights)
    except ValueError as error:
        if pretrained_name is None:
            raise
        # The architecture is the file's own: a failure means the file is bad.
        from keras_sge.applications import pretrained

        raise pretrained.damaged_cache_error(pretrained_name, weights, error) from error


def build_resnet(
    depth: int,
    attention: bool,
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str | None = None,
    groups: int = 64,
    sge_options: dict | None = None,
    include_preprocessing: bool = False,
) -> keras.Model:
    """Builds a ResNet v1.5, with SGE in every block when `attention`.

    This is the common builder behind `SGEResNet18/34/50/101` and
    `ResNet18/34/50/101`; prefer those. The arguments are theirs, plus:

    Args:
        depth: One of 18, 34 (basic blocks), 50, 101 (bottleneck blocks).
        attention: Whether each block gets a `SpatialGroupEnhance` after its
            last BatchNorm, before the residual addition.

    Returns:
        A `keras.Model`.
    """
    if depth not in ARCHITECTURES:
        raise ValueError(
            f"`depth` must be one of {sorted(ARCHITECTURES)}. Received: depth={depth!r}"
        )
    kind, blocks_per_stage = ARCHITECTURES[depth]
    pretrained_name = None
    if _weights_kind(weights) == "imagenet":
        pretrained_name = f"{'sge_' if attention else ''}resnet{depth}"
        weights = _cached_imagenet_weights(pretrained_name, include_top, classes)
    _check_head_arguments(include_top, pooling, classes)
    stage_channels = [w * _EXPANSION[kind] for w in _STAGE_WIDTHS]
    sge_kwargs = _sge_kwargs(attention, groups, sge_options, stage_channels)
    data_format = keras.config.image_data_format()
    input_shape = _input_shape(input_shape, input_tensor, include_top, data_format)

    inputs, model_inputs = _model_inputs(input_tensor, input_shape)
    x = _stem(inputs, data_format, include_preprocessing)
    x = _stages(x, kind, blocks_per_stage, data_format, sge_kwargs)
    x = _top(x, include_top, pooling, classes, classifier_activation, data_format)
    name = name or f"{'sge_' if attention else ''}resnet{depth}"
    model = keras.Model(model_inputs, x, name=name)

    if weights is not None:
        _load_built_weights(model, weights, pretrained_name)
    return model


def _stem(x, data_format, include_preprocessing):
    """(Normalisation,) 7x7 convolution, BatchNorm, ReLU and max pooling: stride 4."""
    if include_preprocessing:
        # RGB in [0, 255] -> (x / 255 - mean) / std, as preprocess_input.
        x = keras.layers.Normalization(
            axis=-1 if data_format == "channels_last" else 1,
            mean=[255.0 * m for m in IMAGENET_MEAN],
            variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
            name="preprocessing",
        )(x)
    x = _conv(x, 64, 7, 2, "conv1", data_format)
    x = _batch_norm(x, "bn1", data_format)
    x = keras.layers.ReLU(name="relu")(x)
    # Zero padding equals PyTorch's -inf padding here: the inputs are >= 0.
    x = keras.layers.ZeroPadding2D(1, data_format=data_format, name="maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, data_format=data_format, name="maxpool")(x)


def _stages(x, kind, blocks_per_stage, data_format, sge_kwargs):
    """The four stages of residual blocks, `layer1` to `layer4`."""
    expansion = _EXPANSION[kind]
    in_channels = 64
    for stage, (width, blocks) in enumerate(zip(_STAGE_WIDTHS, blocks_per_stage)):
        for index in range(blocks):
            strides = 2 if stage > 0 and index == 0 else 1
            project = index == 0 and (strides != 1 or in_channels != width * expansion)
            prefix = f"layer{stage + 1}_{index}"
            x = _block(x, kind, width, strides, project, prefix, data_format, sge_kwargs)
            in_channels = width * expansion
    return x


def _top(x, include_top, pooling, classes, classifier_activation, data_format):
    """The classifier (average pooling and `fc`), or the pooling asked for, or nothing."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
        # PyTorch's nn.Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = x.shape[-1] ** -0.5
        return keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
            ),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            # Logits and softmax in float32 under mixed precision.
            dtype="float32",
            name="fc",
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(data_format=data_format, name="global_maxpool")(x)
    return x


def _cached_imagenet_weights(name: str, include_top: bool, classes: int) -> str:
    """The cached ImageNet file of model `name`, a `.weights.h5` one checked before building."""
    from keras_sge.applications import pretrained

    if include_top and classes != 1000:
        raise ValueError(
            "If using `weights='imagenet'` with `include_top=True`, "
            f"`classes` should be 1000. Received: classes={classes}"
        )
    path = pretrained.imagenet_weights_path(name)
    if path.endswith(KERAS_WEIGHTS_SUFFIX):
        try:
            check_weights_file(path)
        except DamagedWeightsFileError as error:
            raise pretrained.damaged_cache_error(name, path, error) from error
    return path


def load_weights(model: keras.Model, weights: str | os.PathLike) -> None:
    """Loads a Keras `.weights.h5` file or an authors' PyTorch checkpoint.

    Args:
        model: A model built by `keras_sge.applications`.
        weights: The file; PyTorch checkpoints (`.pth`, `.pth.tar`, `.pt`,
            `.tar`) go through `load_pytorch_checkpoint`.

    Example:

    >>> keras_sge.applications.load_weights(model, "sge_resnet50.pth.tar")
    """
    kind = _weights_kind(weights)
    if kind == "imagenet":
        raise ValueError(
            "`load_weights` needs a file; pass `weights='imagenet'` to the "
            "builder (e.g. `SGEResNet50(weights='imagenet')`) to use the cache."
        )
    if kind == "keras":
        _load_weights_file(model, os.fspath(weights))
    else:
        from keras_sge.applications.checkpoint import load_pytorch_checkpoint

        load_pytorch_checkpoint(model, weights)


class DamagedWeightsFileError(ValueError):
    """Raised for a weights file that exists but cannot be read."""


def check_weights_file(path: str | os.PathLike) -> None:
    """Refuses a `.weights.h5` path that is missing or not a readable HDF5 file.

    Args:
        path: The weights file.

    Raises:
        FileNotFoundError: No file at `path`.
        DamagedWeightsFileError: The file is empty, truncated, damaged or of
            another format; the message names it.
    """
    import h5py  # a dependency of Keras

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No weights file at {path!r}.")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        signature = f.read(len(_HDF5_SIGNATURE))
    if signature != _HDF5_SIGNATURE:
        raise DamagedWeightsFileError(
            f"The weights file {path!r} ({size:,} bytes) is not an HDF5 file: it is "
            "empty, truncated, damaged or of another format."
        )
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as error:
        raise DamagedWeightsFileError(
            f"The weights file {path!r} ({size:,} bytes) is damaged or truncated: {error}"
        ) from error


def _load_weights_file(model: keras.Model, path: str) -> None:
    """`model.load_weights` of a `.weights.h5` file, with errors that name the file."""
    check_weights_file(path)
    try:
        model.load_weights(path)
    except OSError as error:  # h5py: damage found past the file's header
        raise DamagedWeightsFileError(f"The weights file {path!r} is damaged: {error}") from error


def pyramid_outputs(model: keras.Model) -> dict:
    """Returns the four stage outputs C2-C5 of a (SGE-)ResNet built here.

    The outputs have strides 4, 8, 16 and 32 relative to the input and
    `64 * k` (basic blocks) or `256 * k` (bottlenecks) channels for
    `k = 1, 2, 4, 8`. They are the usual inputs of a detection neck such as
    an FPN. The model may have been built with or without its top.

    Args:
        model: A model returned by `SGEResNet50` and friends, or loaded from
            a `.keras` file saved from one.

    Returns:
        A dict `{"C2": tensor, "C3": tensor, "C4": tensor, "C5": tensor}` of
        symbolic outputs, ready for `keras.Model(model.input, ...)`.

    Example:

    >>> backbone = keras_sge.applications.SGEResNet50(
    ...     include_top=False, input_shape=(None, None, 3))
    >>> features = keras.Model(
    ...     backbone.input, keras_sge.applications.pyramid_outputs(backbone))
    >>> [tuple(t.shape) for t in features(np.zeros((1, 64, 64, 3))).values()]
    [(1, 16, 16, 256), (1, 8, 8, 512), (1, 4, 4, 1024), (1, 2, 2, 2048)]
    """
    last = {}
    for layer in model.layers:
        match = _STAGE_OUTPUT.match(layer.name)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            if index >= last.get(stage, (-1, None))[0]:
                last[stage] = (index, layer)
    if sorted(last) != [1, 2, 3, 4]:
        raise ValueError(
            "`model` is not a ResNet built by keras_sge.applications: it lacks "
            "the stage output layers `layer{1..4}_{i}_out` (found stages "
            f"{sorted(last)}) in model {model.name!r}."
        )
    return {f"C{stage + 1}": last[stage][1].output for stage in (1, 2, 3, 4)}


_BUILDER_DOC = """Instantiates the {title} architecture{paper}.

    Built like `keras.applications.{keras_name}`, from the authors' PyTorch
    code: torchvision-style ResNet v1.5 (stride on the {stride_conv}), no
    convolution biases, BatchNorm epsilon 1e-5 and momentum 0.9, explicit
    symmetric zero padding, Kaiming-normal (fan_out) convolutions and
    PyTorch's `nn.Linear` initialisation for the classifier.{sge_text}
    Layer names follow the PyTorch modules with `.` written as `_`
    (e.g. `layer1_0_conv1`, `layer1_0_downsample_0`, `fc`). The data format
    is `keras.config.image_data_format()`. Inputs are RGB images normalised
    with `keras_sge.applications.preprocess_input`, or, with
    `include_preprocessing=True`, RGB images in [0, 255].

    Args:
        include_top: Whether to include the global average pooling and the
            fully connected classifier `fc`.
        weights: `None` (random initialization), `"imagenet"` (the authors'
            ImageNet file, found in the weights cache: `~/.keras/models/` or
            `$KERAS_SGE_WEIGHTS_DIR`; when absent, the error says where to
            download it and under which name to save it), the path to a
            Keras `.weights.h5` file, or the path to a PyTorch checkpoint
            (`.pth`, `.pth.tar`, `.pt`, `.tar`) of the authors' model, read
            with `load_pytorch_checkpoint`.
        input_tensor: Optional Keras tensor (output of `keras.Input()`) to
            use as the image input.
        input_shape: Optional shape tuple without the batch axis, e.g.
            `(224, 224, 3)`. Must be static with `include_top=True`
            (defaults to 224x224x3), may contain `None` otherwise; height and
            width at least 32.
        pooling: Pooling when `include_top=False`: `None` (4D output of the
            last block), `"avg"` or `"max"` (global pooling, 2D output).
        classes: Number of classes of the classifier, with `include_top`.
        classifier_activation: Activation of `fc` (`"softmax"`, or `None` for
            logits).
        name: Model name.{sge_args}
        include_preprocessing: Whether the model normalises its input
            itself (a `Normalization` layer named `preprocessing`): it then
            takes RGB images in [0, 255], and saved or exported models keep
            the normalisation.

    Returns:
        A `keras.Model`.

    Example:

    >>> model = keras_sge.applications.{func}(input_shape=(64, 64, 3), classes=10)
    >>> model.output.shape
    (None, 10)
"""

_SGE_TEXT = (
    "\n    A `SpatialGroupEnhance` layer (`layerK_I_sge`, gamma 0 and beta 1 at"
    "\n    initialisation) follows the last BatchNorm of every block, before the"
    "\n    residual addition."
)
_SGE_ARGS = """
        groups: Number of SGE groups (the paper uses 64).
        sge_options: Optional dict of extra `SpatialGroupEnhance` arguments,
            e.g. `{"normalize": False}` for ablations."""


def _architecture_of(variant: str) -> dict:
    """`depth` and `attention` of a variant, from the one table of variants."""
    row = VARIANTS_BY_NAME[variant]
    return {"depth": row.depth, "attention": row.attention}


def SGEResNet18(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "sge_resnet18",
    groups: int = 64,
    sge_options: dict | None = None,
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("sge_resnet18"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        groups=groups,
        sge_options=sge_options,
        include_preprocessing=include_preprocessing,
    )


def ResNet18(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "resnet18",
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("resnet18"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        include_preprocessing=include_preprocessing,
    )


def SGEResNet34(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "sge_resnet34",
    groups: int = 64,
    sge_options: dict | None = None,
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("sge_resnet34"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        groups=groups,
        sge_options=sge_options,
        include_preprocessing=include_preprocessing,
    )


def ResNet34(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "resnet34",
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("resnet34"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        include_preprocessing=include_preprocessing,
    )


def SGEResNet50(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "sge_resnet50",
    groups: int = 64,
    sge_options: dict | None = None,
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("sge_resnet50"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        groups=groups,
        sge_options=sge_options,
        include_preprocessing=include_preprocessing,
    )


def ResNet50(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "resnet50",
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("resnet50"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        include_preprocessing=include_preprocessing,
    )


def SGEResNet101(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "sge_resnet101",
    groups: int = 64,
    sge_options: dict | None = None,
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("sge_resnet101"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        groups=groups,
        sge_options=sge_options,
        include_preprocessing=include_preprocessing,
    )


def ResNet101(
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "resnet101",
    include_preprocessing: bool = False,
) -> keras.Model:
    return build_resnet(
        **_architecture_of("resnet101"),
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        name=name,
        include_preprocessing=include_preprocessing,
    )


def _builder_doc(depth: int, attention: bool) -> str:
    stride_conv = "3x3 convolution" if depth >= 50 else "first 3x3 convolution"
    prefix = "SGE" if attention else ""
    if attention:
        paper = ' of "Spatial Group-wise Enhance" (Li, Hu & Yang, 2019)'
    else:
        paper = ", the baseline of the SGE paper (the SGE-ResNet without SGE)"
    return _BUILDER_DOC.format(
        title=f"{prefix}{'-' if attention else ''}ResNet{depth}",
        paper=paper,
        keras_name=f"ResNet{depth}" if depth >= 50 else "ResNet50",
        stride_conv=stride_conv,
        sge_text=_SGE_TEXT if attention else "",
        sge_args=_SGE_ARGS if attention else "",
        func=f"{prefix}ResNet{depth}",
    )


# One docstring for the eight builders, as keras.applications does.
for _variant in VARIANTS:
    globals()[_variant.function].__doc__ = _builder_doc(_variant.depth, _variant.attention)
del _variant
