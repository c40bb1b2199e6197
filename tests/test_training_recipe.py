"""Recipe pieces of keras_sge.training: coupled L2 SGD, schedules, loss, config."""

import dataclasses

import keras
import numpy as np
import pytest

from keras_sge.training import (
    RECIPES,
    SGDWithL2,
    SparseCategoricalCrossentropyWithSmoothing,
    StepDecay,
    TrainConfig,
    make_schedule,
)


def _run_keras(optimizer, initial, gradients):
    variables = [keras.Variable(w, dtype="float32") for w in initial]
    for step_grads in gradients:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_coupled_l2_matches_hand_computed_update():
    # w0 = 1, lr 0.1, momentum 0.9, l2 0.1; gradients 0.5 then -0.25:
    # b1 = 0.5 + 0.1 * 1 = 0.6,               w1 = 1 - 0.1 * 0.6 = 0.94
    # b2 = 0.9 * 0.6 + (-0.25 + 0.1 * 0.94) = 0.384,  w2 = 0.94 - 0.1 * 0.384 = 0.9016
    optimizer = SGDWithL2(learning_rate=0.1, momentum=0.9, l2=0.1)
    (kernel,) = _run_keras(
        optimizer, [np.ones((1, 1))], [[np.full((1, 1), 0.5)], [np.full((1, 1), -0.25)]]
    )
    np.testing.assert_allclose(kernel, [[0.9016]], rtol=1e-6)

    # Keras' decoupled weight_decay is a different update (w2 = 0.9019... here).
    decoupled = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1)
    (other,) = _run_keras(
        decoupled, [np.ones((1, 1))], [[np.full((1, 1), 0.5)], [np.full((1, 1), -0.25)]]
    )
    assert abs(float(other[0, 0]) - 0.9016) > 1e-4


def test_decay_vectors_false_skips_one_dimensional_parameters():
    optimizer = SGDWithL2(learning_rate=0.1, momentum=0.0, l2=0.5, decay_vectors=False)
    kernel, vector = _run_keras(
        optimizer, [np.ones((2, 2)), np.ones((2,))], [[np.zeros((2, 2)), np.zeros((2,))]]
    )
    np.testing.assert_allclose(kernel, np.full((2, 2), 1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_allclose(vector, np.ones(2), rtol=0)


@pytest.mark.parametrize("nesterov", [False, True])
def test_coupled_l2_matches_torch_sgd_across_a_learning_rate_drop(rng, nesterov):
    torch = pytest.importorskip("torch")
    shapes = [(3, 3, 4, 8), (8,), (5, 7)]
    initial = [rng.standard_normal(s).astype("float32") for s in shapes]
    steps = 6
    gradients = [[rng.standard_normal(s).astype("float32") for s in shapes] for _ in range(steps)]
    # 0.1 for steps 0-1, 0.01 for steps 2-3, 0.001 after: drops inside the run.
    schedule = StepDecay(0.1, steps_per_epoch=2, milestones=(1, 2))
    optimizer = SGDWithL2(learning_rate=schedule, momentum=0.9, l2=1e-4, nesterov=nesterov)
    ours = _run_keras(optimizer, initial, gradients)

    params = [torch.nn.Parameter(torch.tensor(w)) for w in initial]
    reference = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=nesterov)
    for step, step_grads in enumerate(gradients):
        for group in reference.param_groups:
            group["lr"] = 0.1 * 0.1 ** (step // 2)
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g)
        reference.step()
    for mine, theirs in zip(ours, params):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_optimizer_rejects_bad_arguments_and_round_trips_config():
    with pytest.raises(ValueError, match="weight_decay"):
        SGDWithL2(weight_decay=1e-4)
    with pytest.raises(ValueError, match="momentum"):
        SGDWithL2(momentum=1.5)
    with pytest.raises(ValueError, match="l2"):
        SGDWithL2(l2=-1.0)
    optimizer = SGDWithL2(
        learning_rate=0.05, momentum=0.8, l2=3e-4, nesterov=True, decay_vectors=False
    )
    clone = SGDWithL2.from_config(optimizer.get_config())
    assert (clone.momentum, clone.l2, clone.nesterov, clone.decay_vectors) == (
        0.8,
        3e-4,
        True,
        False,
    )


def test_paper_step_schedule_at_given_epochs():
    steps_per_epoch = 7
    schedule = make_schedule(
        "step", peak_learning_rate=0.1, steps_per_epoch=steps_per_epoch, epochs=100
    )
    for epoch in (0, 1, 29, 30, 31, 59, 60, 89, 90, 99):
        for step in (epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch - 1):
            expected = 0.1 * 0.1 ** (epoch // 30)  # the official adjust_learning_rate
            np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)


def test_step_schedule_warmup():
    schedule = StepDecay(0.4, steps_per_epoch=10, milestones=(5,), warmup_steps=20)
    rates = [float(schedule(s)) for s in (0, 10, 20, 49, 50)]
    np.testing.assert_allclose(rates, [0.0, 0.2, 0.4, 0.4, 0.04], rtol=1e-5, atol=1e-7)


def test_cosine_schedule_with_warmup_at_given_epochs():
    spe, epochs, warmup, peak = 10, 12, 2, 0.8
    schedule = make_schedule(
        "cosine", peak_learning_rate=peak, steps_per_epoch=spe, epochs=epochs, warmup_epochs=warmup
    )
    decay_steps = (epochs - warmup) * spe
    for step in (0, 5, 19, 20, 45, 70, 119, 120):
        if step < warmup * spe:
            expected = peak * step / (warmup * spe)
        else:
            progress = min(step - warmup * spe, decay_steps) / decay_steps
            expected = peak * 0.5 * (1 + np.cos(np.pi * progress))
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="shorter than the run"):
        make_schedule(
            "cosine", peak_learning_rate=0.1, steps_per_epoch=1, epochs=2, warmup_epochs=2
        )
    with pytest.raises(ValueError, match="Unknown schedule"):
        make_schedule("linear", peak_learning_rate=0.1, steps_per_epoch=1, epochs=2)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_loss_matches_numpy(rng, smoothing):
    logits = rng.standard_normal((6, 10))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 10, size=6)
    target = np.full((6, 10), smoothing / 10) + np.eye(10)[labels] * (1 - smoothing)
    expected = -(target * np.log(probs)).sum(-1).mean()
    loss = SparseCategoricalCrossentropyWithSmoothing(smoothing)
    value = loss(labels, probs.astype("float32"))
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    value = loss(labels[:, None], probs.astype("float32"))  # (N, 1) labels too
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_config_resolution_and_validation():
    paper = TrainConfig(dataset="imagenet2012", batch_size=512).resolved(accelerator=True)
    assert paper.recipe == "paper" and paper.epochs == 100 and paper.schedule == "step"
    assert paper.lr_milestones == [30, 60, 90] and paper.weight_decay == 1e-4
    assert (
        paper.decay_all_parameters
        and paper.label_smoothing == 0
        and paper.mixed_precision == "none"
    )
    assert paper.image_size == 224 and paper.peak_learning_rate == pytest.approx(0.2)

    fast = TrainConfig(dataset="imagenet2012", recipe="fast").resolved(accelerator=True)
    assert fast.schedule == "cosine" and fast.label_smoothing == 0.1
    assert not fast.decay_all_parameters and fast.mixed_precision == "bfloat16"
    assert (
        TrainConfig(dataset="imagenet2012", recipe="fast")
        .resolved(accelerator=False)
        .mixed_precision
        == "none"
    )

    demo = TrainConfig(epochs=3).resolved(accelerator=False)
    assert demo.recipe == "fast" and demo.epochs == 3 and demo.image_size == 40

    overridden = TrainConfig(dataset="imagenet2012", weight_decay=0.0, lr=0.4).resolved(
        accelerator=False
    )
    assert overridden.weight_decay == 0.0 and overridden.lr == 0.4
    assert set(RECIPES["paper"]) <= {f.name for f in dataclasses.fields(TrainConfig)}

    for bad, match in [
        (dict(recipe="slow"), "Unknown recipe"),
        (dict(model="vgg16"), "Unknown model"),
        (dict(model="resnet50", sge_options={"normalize": False}), "sge_options"),
        (dict(mixed_precision="float8"), "mixed_precision"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=-1.0), "lr"),
        (dict(warmup_epochs=10, epochs=5), "warmup_epochs"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad).resolved(accelerator=False)
