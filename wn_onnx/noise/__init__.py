"""Noise models: one registry of what a scan can do to a network's values.

Each model is one module: :mod:`~wn_onnx.noise.gaussian` (the paper's add / mul / mixed),
:mod:`~wn_onnx.noise.quant` (b-bit quantisation), :mod:`~wn_onnx.noise.bitflip` (bit errors in a
storage format), and plug-ins (:mod:`~wn_onnx.noise.plugin`). A model declares its strength axis
and where it acts (:mod:`~wn_onnx.noise.base`); the engine applies it to activations after a
point or to the weights a layer multiplies by.
"""

from __future__ import annotations

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import TARGETS, Axis, NoiseModel, Reference
from wn_onnx.noise.bitflip import FORMATS, BitFlip
from wn_onnx.noise.gaussian import KINDS, ORDERS, WEIGHT_SCALES, Kind, NoiseSpec, Order, apply_noise, default_grid
from wn_onnx.noise.grid import MAX_GRID, parse_grid
from wn_onnx.noise.plugin import load_plugin, source_digest
from wn_onnx.noise.quant import Quant

BUILT_IN = (*KINDS, Quant.name, BitFlip.name)


def default_repeats(on: str) -> int:
    """Repeats when none are given: 10 on weights, where each repeat is one draw that every sample
    shares and the spread between repeats carries most of μ's error (calibrated at 10:
    tests/test_noise_models.py), else 5."""
    return 10 if on == "weights" else 5

__all__ = [
    "BUILT_IN",
    "FORMATS",
    "KINDS",
    "MAX_GRID",
    "ORDERS",
    "TARGETS",
    "WEIGHT_SCALES",
    "Axis",
    "BitFlip",
    "Kind",
    "NoiseModel",
    "NoiseSpec",
    "Order",
    "Quant",
    "Reference",
    "apply_noise",
    "default_grid",
    "load_plugin",
    "make_noise",
    "noise_from_json",
    "noise_json",
    "parse_grid",
    "plugin_source",
    "source_digest",
]  # fmt: skip


def make_noise(
    name: str,
    order: str | None = None,
    ratio: float | None = None,
    sigma_mul: float | None = None,
    sigma_add: float | None = None,
    weight_scale: str | None = None,
    per_tensor: bool = False,
    percentile: float | None = None,
    format: str | None = None,
) -> NoiseModel:
    """The noise model ``name`` (a built-in, or ``module:Name`` / ``file.py:Name``) with its options;
    an option that does not apply to the model is an error."""
    given = {"order": order, "sigma_ratio": ratio, "sigma_mul": sigma_mul, "sigma_add": sigma_add,
             "weight_scale": weight_scale, "per_tensor": per_tensor or None, "percentile": percentile,
             "format": format}  # fmt: skip
    own = {
        **dict.fromkeys(KINDS, ("order", "sigma_ratio", "sigma_mul", "sigma_add", "weight_scale")),
        Quant.name: ("per_tensor", "percentile"),
        BitFlip.name: ("format",),
    }.get(name, ())
    foreign = [k for k, v in given.items() if v is not None and k not in own]
    if foreign:
        raise ConfigError(f"{', '.join(k.replace('_', '-') for k in foreign)} does not apply to noise model {name!r}")
    if name in KINDS:
        return NoiseSpec(name, order, ratio, sigma_mul, sigma_add, weight_scale)
    if name == Quant.name:
        return Quant(per_tensor, percentile)
    if name == BitFlip.name:
        return BitFlip(format or "int8")
    if ":" not in name:
        raise ConfigError(f"unknown noise model {name!r}; choose {', '.join(BUILT_IN)}, module:Name or file.py:Name")
    model = load_plugin(name)
    object.__setattr__(model, "_plugin_source", name)  # what the report records to build it again
    return model


def plugin_source(model: NoiseModel) -> str | None:
    """The ``module:Name`` a plug-in model was loaded from (None for a built-in)."""
    return getattr(model, "_plugin_source", None)


def noise_json(model: NoiseModel) -> dict:
    """What a report stores of ``model``: its JSON form, and a plug-in's source."""
    source = plugin_source(model)
    return model.to_json() | ({"plugin": source} if source else {})


def noise_from_json(d: dict | None) -> NoiseModel:
    """Inverse of :func:`noise_json` (reports and plans store the noise that way)."""
    d = d or {}
    kind = d.get("kind", "add")
    if "plugin" in d:
        return make_noise(str(d["plugin"]))
    if kind == Quant.name:
        return Quant(bool(d.get("per_tensor", False)), d.get("percentile"))
    if kind == BitFlip.name:
        return BitFlip(d.get("format", "int8"))
    return NoiseSpec.from_json(d)
