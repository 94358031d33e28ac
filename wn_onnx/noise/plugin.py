"""User noise models: ``--noise module:Name`` or ``--noise path/to/file.py:Name``.

``Name`` is a :class:`~wn_onnx.noise.base.NoiseModel` subclass (docs/noise-models.md has a
complete example); it is built without arguments. It is read as metric plug-ins are
(wn_onnx/plugins.py): whatever goes wrong while importing or building it is one line naming it,
and stored curves are keyed by its file's bytes.
"""

from __future__ import annotations

from wn_onnx import plugins
from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import TARGETS, Axis, NoiseModel


def load_plugin(source: str) -> tuple[NoiseModel, str]:
    """(the noise model ``source`` names, the SHA-256 of its code)."""
    label = f"noise model {source!r}"
    cls, digest = plugins.load_attribute(source, label, plugins.file_code(source, label))
    if not (isinstance(cls, type) and issubclass(cls, NoiseModel)):
        raise ConfigError(f"{label}: {source.rpartition(':')[2]!r} is not a wn_onnx.NoiseModel subclass")
    try:
        model = cls()
    except (Exception, SystemExit) as err:  # the plug-in's own failure, in one line
        raise plugins.plugin_failure(label, "failed to build", err) from err
    _check(label, model)
    return model, digest


def _check(label: str, model: NoiseModel) -> None:
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
        raise ConfigError(f"{label}: {'; '.join(problems)}")
