"""The converters of an analog tile: a DAC quantises each analog layer's input, an ADC its output
(with optional output noise), the ranges being the clean maxima of |input| and |output| over the
scanned samples. They act on the layers a weight scan makes analog (the walked layer, or every
selected layer globally), beside any weight noise model; the ``converters`` model sweeps their bits
with nothing else perturbed.

A b-bit converter has n = 2^(b−1) − 1 levels each side of zero, step r/n: q = clip(round(v/step),
−n, n)·step (round half to even); 1 bit keeps the sign, sign(v)·r, as ``quant`` does. Output noise
adds σ_out·r_out·z to the output before the ADC, z standard normal per element and sample, r_out
the layer's one clean max |output| (every element and sample, the ADC's full scale).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import Axis, NoiseModel, Reference

MIN_BITS, MAX_BITS = 1, 32


def levels_of(bits: int) -> int:
    """Levels each side of zero of a b-bit symmetric converter (1 bit: the sign, one level)."""
    return max(2 ** (bits - 1) - 1, 1)


@dataclass(frozen=True)
class Converters:
    """Fixed converter settings of a weight scan (None: no such converter)."""

    dac_bits: int | None = None
    adc_bits: int | None = None
    out_noise: float = 0.0  # σ of the noise added to an analog layer's output, relative to its clean max |output|

    def __post_init__(self) -> None:
        for name in ("dac_bits", "adc_bits"):
            bits = getattr(self, name)
            if bits is not None and not (isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS):
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number in [{MIN_BITS}, {MAX_BITS}], got {bits}")
        if not (np.isfinite(self.out_noise) and self.out_noise >= 0):
            raise ConfigError(f"--out-noise must be a finite number >= 0, got {self.out_noise}")

    @property
    def active(self) -> bool:
        return self.dac_bits is not None or self.adc_bits is not None or self.out_noise > 0

    def at(self, bits: int | None) -> tuple[int | None, int | None]:
        """(DAC bits, ADC bits) when a sweep sets ``bits`` (the ``converters`` model): the fixed
        ones stay, the others take the swept value."""
        if bits is None:
            return self.dac_bits, self.adc_bits
        return self.dac_bits or bits, self.adc_bits or bits

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ConvertersModel(NoiseModel):
    """``converters``: only the converters of each analog layer, their bits swept (the weights exact)."""

    name = "converters"
    axis = Axis("bits", "bits", "lin", "lin:1:16:16", more="down", integer=True, lowest=MIN_BITS, highest=MAX_BITS)
    targets = ("weights",)
    deterministic = True  # unless output noise is asked for (the scan then keeps its repeats)
    averages = False
    draws = 0

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
        return []

    def perturb(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        return x
