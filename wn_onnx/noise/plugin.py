"""User noise models: ``--noise module:Name`` or ``--noise path/to/file.py:Name``.

``Name`` is a :class:`~wn_onnx.noise.base.NoiseModel` subclass (docs/noise-models.md has a
complete example); it is built without arguments. Whatever goes wrong while importing or checking
it is one :class:`ConfigError` naming the plug-in.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
from pathlib import Path

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import TARGETS, Axis, NoiseModel


@functools.cache
def load_plugin(source: str) -> NoiseModel:
    """The noise model ``source`` names (imported once per process)."""
    module_name, _, attr = source.rpartition(":")
    if not module_name or not attr:
        raise ConfigError(f"noise model {source!r}: give module:Name or file.py:Name")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(f"noise model {source!r}: no Python file {module_name}")
            spec = importlib.util.spec_from_file_location(f"wn_onnx_noise_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"noise model {source!r}: cannot load {module_name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        cls = getattr(module, attr, None)
        if not (isinstance(cls, type) and issubclass(cls, NoiseModel)):
            raise ConfigError(f"noise model {source!r}: {attr!r} in {module_name} is not a wn_onnx.NoiseModel subclass")
        model = cls()
    except ConfigError:
        raise
    except (Exception, SystemExit) as err:  # the plug-in's own failure, in one line
        raise ConfigError(f"noise model {source!r} failed to load: {type(err).__name__}: {err}") from None
    _check(source, model)
    return model


def _check(source: str, model: NoiseModel) -> None:
    """What the engine relies on, checked before any run."""
    problems = []
    if not isinstance(getattr(model, "axis", None), Axis):
        problems.append("its axis is not a wn_onnx.noise.Axis")
    if not set(getattr(model, "targets", ())) <= set(TARGETS) or not model.targets:
        problems.append(f"targets must be a non-empty subset of {TARGETS}")
    for method in ("draw", "perturb"):
        if getattr(type(model), method) is getattr(NoiseModel, method):
            problems.append(f"it does not implement {method}()")
    if not model.name or not isinstance(model.name, str):
        problems.append("it has no name")
    if problems:
        raise ConfigError(f"noise model {source!r}: {'; '.join(problems)}")


def source_digest(source: str) -> str:
    """Hash of a file plug-in's code (what a resumed scan's stored curves depend on); the name
    of a module plug-in."""
    module_name = source.rpartition(":")[0]
    if module_name.endswith(".py") and Path(module_name).is_file():
        return hashlib.sha256(Path(module_name).read_bytes()).hexdigest()
    return source
