"""Symmetric uniform quantisation to b bits: what every digital accelerator does to its values.

A b-bit symmetric quantiser has n = 2^(b-1) − 1 levels each side of zero and the step
s = top / n, top being the largest |value| (per output channel of a weight by default, per
tensor for activations, from the clean activations of the scanned samples); 1 bit keeps the sign
(±top; an exact zero stays 0). Values are rounded half to even (numpy's ``rint``, ONNX's ``Round``). It is
deterministic: one repeat says everything, and repeated execution cannot average it away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import Axis, NoiseModel, Reference

MAX_BITS = 32


def quantize(x: np.ndarray, bits: int, top: float | np.ndarray) -> np.ndarray:
    """``x`` on the symmetric ``bits``-bit grid whose largest level is ``top`` (broadcast)."""
    top = np.asarray(top, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if bits == 1:
            q = np.sign(x) * top
        else:
            n = 2.0 ** (bits - 1) - 1
            step = top / n
            q = np.clip(np.rint(x / step), -n, n) * step
        q = np.where(top > 0, q, 0.0)  # an all-zero tensor (or channel) stays zero
    return q.astype(x.dtype, copy=False)


def bits_of(strength: float) -> int:
    """The bit width a strength 2^-bits stands for."""
    return int(np.rint(-np.log2(strength)))


@dataclass(frozen=True)
class Quant(NoiseModel):
    """``quant``: b-bit symmetric uniform quantisation (axis: bits, 1…16 by default)."""

    per_tensor: bool = False  # weights: one scale per tensor instead of one per output channel
    percentile: float | None = None  # activations: top = this percentile of |x| instead of the largest

    name = "quant"
    axis = Axis("bits", "bits", "lin", "lin:1:16:16", more="down", integer=True, lowest=1, highest=MAX_BITS)
    deterministic = True
    averages = False
    draws = 0

    def __post_init__(self) -> None:
        if self.percentile is not None and not 50 < self.percentile <= 100:
            raise ConfigError(f"quantisation percentile must lie in (50, 100], got {self.percentile}")

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
        return []

    def perturb(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        top = ref.absmax if self.per_tensor or ref.channel_absmax is None else ref.channel_absmax
        return quantize(x, bits_of(strength), top)

    def to_json(self) -> dict:
        out: dict = {"kind": self.name, "per_tensor": self.per_tensor}
        return out if self.percentile is None else out | {"percentile": self.percentile}
