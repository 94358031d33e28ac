"""Noise models: one registry of what a scan can do to a network's values.

Each model is one module: :mod:`~wn_onnx.noise.gaussian` (the paper's add / mul / mixed),
:mod:`~wn_onnx.noise.quant` (b-bit quantisation), :mod:`~wn_onnx.noise.bitflip` (bit errors in a
storage format), and plug-ins (:mod:`~wn_onnx.noise.plugin`). A model declares its strength axis
and where it acts (:mod:`~wn_onnx.noise.base`); the engine applies it to activations after a
point or to the weights a layer multiplies by.
"""

from __future__ import annotations

import dataclasses

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import TARGETS, Axis, NoiseModel, Reference
from wn_onnx.noise.bitflip import FORMATS, BitFlip
from wn_onnx.noise.converters import Converters, ConvertersModel
from wn_onnx.noise.gaussian import KINDS, ORDERS, WEIGHT_SCALES, Kind, NoiseSpec, Order, apply_noise, default_grid
from wn_onnx.noise.grid import MAX_GRID, parse_grid
from wn_onnx.noise.pcm import PCM
from wn_onnx.noise.plugin import load_plugin
from wn_onnx.noise.quant import Quant

BUILT_IN = (*KINDS, Quant.name, BitFlip.name, PCM.name, ConvertersModel.name)


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
    "MODELS",
    "ORDERS",
    "PCM",
    "TARGETS",
    "WEIGHT_SCALES",
    "Axis",
    "BitFlip",
    "Converters",
    "ConvertersModel",
    "Kind",
    "NoiseModel",
    "NoiseSpec",
    "Order",
    "Quant",
    "Reference",
    "apply_noise",
    "default_grid",
    "default_repeats",
    "load_plugin",
    "make_noise",
    "noise_from_json",
    "noise_json",
    "options_of",
    "parse_grid",
    "plugin_digest",
    "plugin_source",
]


MODELS: dict[str, type[NoiseModel]] = {Quant.name: Quant, BitFlip.name: BitFlip, PCM.name: PCM,
                                      ConvertersModel.name: ConvertersModel}


FLAGS = {"ratio": "sigma-ratio", "compensation": "drift-compensation"}  # options whose flag is named otherwise


def options_of(name: str) -> tuple[str, ...]:
    """The options model ``name`` takes (its dataclass fields; a Gaussian kind's besides ``kind``)."""
    cls = NoiseSpec if name in KINDS else MODELS.get(name)
    return () if cls is None else tuple(f.name for f in dataclasses.fields(cls) if f.name != "kind")


def make_noise(name: str, **options: object) -> NoiseModel:
    """The noise model ``name`` (a built-in, or ``module:Name`` / ``file.py:Name``) with its options
    (None: the model's default); an option that does not apply to the model is an error."""
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    foreign = sorted(set(given) - set(options_of(name)))
    if foreign:
        shown = ", ".join("--" + FLAGS.get(k, k.replace("_", "-")) for k in foreign)
        raise ConfigError(f"{shown} does not apply to noise model {name!r}")
    if name in KINDS:
        return NoiseSpec(name, **given)
    if name in MODELS:
        return MODELS[name](**given)
    if ":" not in name:
        raise ConfigError(f"unknown noise model {name!r}; choose {', '.join(BUILT_IN)}, module:Name or file.py:Name")
    model, digest = load_plugin(name)
    object.__setattr__(model, "_plugin_source", name)  # what the report records to build it again
    object.__setattr__(model, "_plugin_digest", digest)  # what its stored curves are keyed by
    return model


def plugin_source(model: NoiseModel) -> str | None:
    """The ``module:Name`` a plug-in model was loaded from (None for a built-in)."""
    return getattr(model, "_plugin_source", None)


def plugin_digest(model: NoiseModel) -> str | None:
    """The SHA-256 of a plug-in model's code (None for a built-in): a resumed scan computes again
    after the code changed."""
    return getattr(model, "_plugin_digest", None)


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
    if kind in MODELS:
        return MODELS[kind](**{k: v for k, v in d.items() if k in options_of(kind)})
    return NoiseSpec.from_json(d)
