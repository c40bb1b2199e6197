"""An SGE-ResNet RetinaNet from keras-hub, and the authors' detection recipe."""

from __future__ import annotations

import dataclasses
import math
import os

import keras
import keras_hub

from keras_sge.detection.backbone import SGEResNetBackbone, freeze_stages


@dataclasses.dataclass(frozen=True)
class DetectionRecipe:
    """The authors' RetinaNet recipe (mmdetection, their COCO configs).

    Rates are per `base_batch_size` images and scale linearly with the batch.
    Sizes are the test/train resize: the longer side at most
    `max_size[0]`, the shorter at most `max_size[1]`, keeping the aspect,
    padded to a multiple of `size_divisor`.
    """

    learning_rate: float = 0.01
    base_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    warmup_start_factor: float = 1.0 / 3.0
    epochs: int = 24
    milestones: tuple[int, ...] = (16, 22)
    decay_factor: float = 0.1
    clip_norm: float = 35.0
    max_size: tuple[int, int] = (1333, 800)
    size_divisor: int = 32
    flip_probability: float = 0.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 0.11
    positive_iou: float = 0.5
    negative_iou: float = 0.4
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    prior_probability: float = 0.01
    frozen_stages: int = 1
    min_level: int = 3
    max_level: int = 7
    anchor_size: float = 4.0
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)

    def scaled_learning_rate(self, batch_size: int) -> float:
        """The linear scaling rule: `learning_rate * batch_size / base_batch_size`."""
        return self.learning_rate * batch_size / self.base_batch_size


DETECTION_RECIPE = DetectionRecipe()


def needs_eager_execution(image_size: int | tuple[int, int]) -> bool:
    """Whether keras-hub's RetinaNet must run eagerly on batches of `image_size`.

    keras-hub 0.32's anchor generator and NMS compute sizes in Python from
    the input's static height and width. A `(long, short)` scale batches two
    canvases, so a TensorFlow graph traced for the dataset has no static
    height and width and fails; on TensorFlow such a detector runs eagerly
    (`compile(run_eagerly=True)`). JAX traces each canvas on its own and
    torch runs eagerly anyway.

    Args:
        image_size: a square side (static: no) or a `(long, short)` scale.

    Returns:
        True on the TensorFlow backend with a scale.
    """
    return keras.backend.backend() == "tensorflow" and not isinstance(image_size, int)


def build_retinanet(
    num_classes: int,
    depth: int = 50,
    attention: bool = True,
    *,
    image_shape: tuple = (None, None, 3),
    weights: str | os.PathLike | None = None,
    recipe: DetectionRecipe = DETECTION_RECIPE,
    bounding_box_format: str = "xyxy",
    anchor_size: float | None = None,
    fine_tune: bool | None = None,
    head_convs: int = 4,
    seed: int | None = None,
) -> keras_hub.models.RetinaNetObjectDetector:
    """Builds keras-hub's `RetinaNetObjectDetector` on an (SGE-)ResNet.

    The authors' RetinaNet: FPN (256 channels) on C3-C5, P6 and P7 from C5,
    anchors of 3 scales x ratios 0.5/1/2 with octave base `anchor_size`
    (an anchor of `anchor_size * stride` pixels), keras-hub's label encoder
    (it matches at IoU 0.5/0.4, the recipe's; it is not public API, so its
    thresholds are not set here), test score threshold, NMS and box count of
    `recipe`.

    Args:
        num_classes: object classes (no background class).
        depth: 18, 34, 50 or 101.
        attention: SGE-ResNet (`True`) or the plain ResNet baseline.
        image_shape: input shape; `(None, None, 3)` for any size.
        weights: backbone start (see `SGEResNetBackbone`), e.g. `"imagenet"`.
        recipe: the `DetectionRecipe` (anchors, matching, decoding, freezing).
        bounding_box_format: keras box format of the targets and predictions,
            in pixels (`"xyxy"`, `"yxyx"`, `"xywh"`, ...).
        anchor_size: overrides `recipe.anchor_size` (smaller objects need
            smaller anchors).
        fine_tune: freeze the stem, `recipe.frozen_stages` stages and all
            BatchNorm (the authors' fine-tuning); default: when `weights`.
        head_convs: 256-channel convolutions of each head before its
            prediction (the authors' 4; fewer make a small demo faster).
        seed: seed of the heads' initialisation.

    Returns:
        An uncompiled `keras_hub.models.RetinaNetObjectDetector` that takes
        images normalised like `keras_sge.applications.preprocess_input`.

    Example:

    >>> detector = build_retinanet(num_classes=4, depth=18, image_shape=(64, 64, 3))
    >>> compile_retinanet(detector, batch_size=2, steps_per_epoch=10)
    """
    encoder = SGEResNetBackbone(depth, attention, image_shape=image_shape, weights=weights)
    if fine_tune if fine_tune is not None else weights is not None:
        freeze_stages(encoder, recipe.frozen_stages)
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder,
        min_level=recipe.min_level,
        max_level=recipe.max_level,
        use_p5=False,
        image_shape=image_shape,
    )
    anchors = keras_hub.layers.AnchorGenerator(
        bounding_box_format,
        min_level=recipe.min_level,
        max_level=recipe.max_level,
        num_scales=recipe.num_scales,
        aspect_ratios=list(recipe.aspect_ratios),
        anchor_size=anchor_size if anchor_size is not None else recipe.anchor_size,
    )
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format=bounding_box_format,
        from_logits=True,
        iou_threshold=recipe.nms_iou,
        confidence_threshold=recipe.score_threshold,
        max_detections=recipe.max_detections,
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone,
        num_classes=num_classes,
        bounding_box_format=bounding_box_format,
        anchor_generator=anchors,
        prediction_decoder=decoder,
        pre_logits_num_conv_layers=head_convs,
    )
    _initialize_heads(detector, recipe.prior_probability, seed)
    return detector


def _initialize_heads(detector: keras.Model, prior_probability: float, seed: int | None) -> None:
    # The RetinaNet paper's (and mmdetection's) head initialisation: every
    # convolution N(0, 0.01), zero biases, and the classification head's
    # last bias -log((1 - p) / p) so every class score starts at the prior p.
    # keras-hub 0.32 draws N(0, 0.05) and puts the prior bias on the *box*
    # head, so the class scores start near 0.5 on every anchor, the focal loss
    # starts in the hundreds and the first steps throw the detector off.
    generator = keras.random.SeedGenerator(seed)
    for head in (detector.classification_head, detector.box_head):
        for conv in [*head.conv_layers, head.prediction_layer]:
            conv.kernel.assign(keras.random.normal(conv.kernel.shape, stddev=0.01, seed=generator))
            conv.bias.assign(keras.ops.zeros(conv.bias.shape))
    bias = detector.classification_head.prediction_layer.bias
    bias.assign(
        keras.ops.full(bias.shape, -math.log((1.0 - prior_probability) / prior_probability))
    )


def compile_retinanet(
    detector: keras.Model,
    *,
    batch_size: int,
    steps_per_epoch: int,
    recipe: DetectionRecipe = DETECTION_RECIPE,
    learning_rate: float | None = None,
    warmup_steps: int | None = None,
    epochs: int | None = None,
    optimizer: keras.optimizers.Optimizer | None = None,
    **compile_kwargs,
) -> None:
    """Compiles a RetinaNet with the authors' optimizer, schedule and losses.

    SGD with momentum and coupled L2 decay (`SGDWithL2`, PyTorch's SGD),
    the rate scaled to the batch, linear warmup from `warmup_start_factor`,
    x`decay_factor` at the milestone epochs (scaled to `epochs` when it is
    not the recipe's), global gradient-norm clipping; focal loss and
    smooth-L1 (a Huber loss of `delta=beta`, weighted 1 / beta), summed over
    anchors, classes and coordinates and divided by the positive anchors (in
    keras-hub's `compute_loss`).

    Args:
        detector: from `build_retinanet`.
        batch_size: global batch size (for the linear scaling rule).
        steps_per_epoch: optimizer steps per epoch.
        recipe: the `DetectionRecipe`.
        learning_rate: overrides the scaled rate.
        warmup_steps: overrides `recipe.warmup_steps`.
        epochs: run length; the milestones scale with it.
        optimizer: replaces the recipe's SGD (e.g. Adam for short demo runs).
        **compile_kwargs: other `compile` arguments (`jit_compile`, ...).
    """
    from keras_sge.optimizers import SGDWithL2
    from keras_sge.optimizers.schedules import StepDecay

    epochs = epochs or recipe.epochs
    milestones = [round(m * epochs / recipe.epochs) for m in recipe.milestones]
    schedule = StepDecay(
        learning_rate or recipe.scaled_learning_rate(batch_size),
        steps_per_epoch,
        milestones=[m for m in milestones if 0 < m < epochs],
        factor=recipe.decay_factor,
        warmup_steps=recipe.warmup_steps if warmup_steps is None else warmup_steps,
        warmup_start_factor=recipe.warmup_start_factor,
    )
    optimizer = optimizer or SGDWithL2(
        schedule,
        momentum=recipe.momentum,
        l2=recipe.weight_decay,
        global_clipnorm=recipe.clip_norm,
    )
    beta = recipe.smooth_l1_beta
    detector.compile(
        optimizer=optimizer,
        box_loss=keras.losses.Huber(delta=beta, reduction="sum"),
        classification_loss=keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True,
            alpha=recipe.focal_alpha,
            gamma=recipe.focal_gamma,
            from_logits=True,
            reduction="sum",
        ),
        # Keras' losses average over the last axis (4 coordinates, the
        # classes) where mmdetection sums: the weights restore the sums.
        loss_weights={"bbox_regression": 4.0 / beta, "cls_logits": float(detector.num_classes)},
        **compile_kwargs,
    )
