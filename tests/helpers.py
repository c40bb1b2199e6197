"""Helpers shared by the tests; fixtures and hooks live in conftest.py."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from types import ModuleType

import keras
import numpy as np

import keras_sge

BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "jax", "torch")
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Image side of the tiny training runs.
SIZE = 32


def channels_first_convs_supported() -> bool:
    """TensorFlow on the CPU has no NCHW convolution kernels."""
    if BACKEND != "tensorflow":
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def subprocess_env(backend: str) -> dict:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    # Programs import this checkout's package, whichever copy is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPOSITORY, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


_LOAD_IN_FRESH_PROCESS = """
import json, sys
import keras
heavy = ("tensorflow", "matplotlib", "keras_hub")
with_keras = {name for name in heavy if name in sys.modules}
import keras_sge
report = {}
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)
    optimizer = model.optimizer
    report[path] = {
        "optimizer": type(optimizer).__name__ if optimizer else None,
        "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer else 0,
        "loss": type(model.loss).__name__ if model.compiled else None,
    }
report["imported"] = sorted(name for name in heavy if name in set(sys.modules) - with_keras)
print(json.dumps(report))
"""


def load_in_fresh_process(paths, backend: str = BACKEND) -> dict:
    """Loads `.keras` files in a new process with `import keras_sge` and `load_model` only.

    Returns:
        `{str(path): {"optimizer", "iterations", "loss"}}` and, under `"imported"`, which of
        TensorFlow, matplotlib and keras-hub the process imported beyond what `import keras`
        imports itself.
    """
    completed = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, *map(str, paths)],
        env=subprocess_env(backend),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def load_program(name: str) -> ModuleType:
    """The module of program `name`, to call its `main`.

    `keras_sge.programs.<name>` where the program lives in the package, else
    `applications/<name>.py` imported as a module.
    """
    if importlib.util.find_spec(f"keras_sge.programs.{name}") is not None:
        return importlib.import_module(f"keras_sge.programs.{name}")
    path = os.path.join(REPOSITORY, "applications", name + ".py")
    spec = importlib.util.spec_from_file_location(name + "_program", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def finite_differences(loss, value, step=1e-6):
    """Central differences of the scalar `loss` at float64 `value`, element by element."""
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        plus, minus = value.copy(), value.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (loss(plus) - loss(minus)) / (2 * step)
    return grad


def tiny_model(input_shape, num_classes, batch_norm=True):
    """Conv -> (BN) -> SGE -> pool -> softmax: a few thousand parameters."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=not batch_norm)(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras_sge.layers.SpatialGroupEnhance(groups=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def tiny_config(output_dir, **overrides):
    """A `TrainConfig` of a few steps on the demo data at `SIZE` px."""
    from keras_sge.training import TrainConfig

    values = dict(
        dataset="demo",
        image_size=SIZE,
        epochs=2,
        batch_size=16,
        steps_per_epoch=3,
        validation_steps=2,
        output_dir=str(output_dir),
        verbose=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def randomize_torch_network(net, seed):
    """Random weights and non-trivial BatchNorm statistics and SGE parameters."""
    import torch

    from benchmarks import torch_resnet

    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(uniform(shape, 0.5, 1.2))
                module.bias.copy_(uniform(shape, -0.2, 0.2))
                module.running_mean.copy_(uniform(shape, -0.2, 0.2))
                module.running_var.copy_(uniform(shape, 0.5, 2.0))
                module.num_batches_tracked.fill_(1234)
            elif isinstance(module, torch_resnet.SpatialGroupEnhance):
                module.weight.copy_(uniform(module.weight.shape, -2.0, 2.0))
                module.bias.copy_(uniform(module.bias.shape, -1.0, 1.0))
            elif isinstance(module, torch.nn.Linear):
                # Larger than PyTorch's default, so that the logits depend
                # visibly on the image rather than on the bias.
                module.weight.copy_(uniform(module.weight.shape, -0.2, 0.2))
                module.bias.copy_(uniform(module.bias.shape, -0.5, 0.5))
    return net.eval()


def save_as_authors(net, path):
    """Saves `net` in the PytorchInsight training script's checkpoint layout."""
    import torch

    state = {"module." + key: value for key, value in net.state_dict().items()}
    torch.save(
        {
            "epoch": 100,
            "arch": "sge_resnet50",
            "state_dict": state,
            "acc": torch.tensor(77.584),
            "best_acc": 77.584,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.0001, "momentum": 0.9}]},
        },
        path,
    )


def torch_outputs(net, images_nchw):
    """The logits and pooled features of a reference network (NCHW NumPy in)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(images_nchw)
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        pooled = torch.flatten(net.avgpool(x), 1)
        return net.fc(pooled).numpy(), pooled.numpy()
