"""The package's one rule for optional parts: load on first use, name the extra.

`import keras_sge` imports only the core (`layers`, `applications`: Keras and
NumPy). Subpackages and names that need an extra's packages (TensorFlow,
tensorflow-datasets, matplotlib, ...) are loaded on first attribute access
through `lazy_exports`, and `require` turns a missing package into an
`ImportError` that says which extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType


def require(package: str, extra: str, purpose: str) -> ModuleType:
    """Imports an optional package, or says which extra brings it.

    Args:
        package: The module to import, e.g. `"tensorflow"`.
        extra: The keras-sge extra that installs it, e.g. `"data"`.
        purpose: What needs it, for the message (e.g. `"keras_sge.data"`).

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the `{package}` package, which the `{extra}` extra "
            f'installs: pip install "keras-sge[{extra}]"'
        ) from error


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module-level `__getattr__` and `__dir__` that import names on first use.

    Args:
        package: The importing package's `__name__`.
        exports: `{public name: submodule}`; a submodule of `""` means the
            name is itself a submodule of `package`.

    Returns:
        The `(__getattr__, __dir__)` pair to assign in the package.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if exports[name]:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        else:
            value = importlib.import_module(f"{package}.{name}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def register_deferred_class(registered_name: str, module: str, name: str) -> None:
    """Lets Keras deserialize a class whose module is imported only when needed.

    Keras finds custom classes by their registered name (e.g.
    `"keras_sge>SGEResNetBackbone"`), which the class's decorator records
    when its module is imported. This registers a stand-in under that name
    whose `from_config` imports `module` (with its extra's check) and
    hands over to the real class, so a `.keras` file that holds one loads
    after `import keras_sge` alone, and the import happens only then. The
    real class replaces the stand-in when its module is imported.

    Args:
        registered_name: `"package>ClassName"` as the class registers itself.
        module: The module that defines the class.
        name: The class name in `module`.
    """
    import keras

    def from_config(cls, config):
        real_class = getattr(importlib.import_module(module), name)
        return real_class.from_config(config)

    stand_in = type(name, (), {"from_config": classmethod(from_config)})
    keras.saving.get_custom_objects().setdefault(registered_name, stand_in)
