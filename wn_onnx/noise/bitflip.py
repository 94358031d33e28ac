"""Bit flips in stored values: each bit of each value flips on its own with probability p.

The storage format is int8 (symmetric, one scale per tensor: top/127, as ``quant`` at 8 bits
per tensor — so int8 includes its own rounding), fp16 or fp32. Flips are placed without touching
every bit: the gaps between flipped bits of a tensor are geometric with parameter p_top (the
largest p swept), each flip carries a uniform u in [0, p_top), and at p the flips with u < p are
applied — exactly independent Bernoulli(p) bits at every p, nested across p (common random
numbers), at a cost proportional to the flips. An exponent flip that makes Inf or NaN gives
a non-finite output, counted as a wrong prediction. The anchor is PyTorchFI's random bit-flip
fault model (independent flips at a bit error rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import Axis, NoiseModel, Reference

FORMATS: dict[str, tuple[type, int]] = {"int8": (np.uint8, 8), "fp16": (np.uint16, 16), "fp32": (np.uint32, 32)}


def flip_positions(rng: np.random.Generator, count: int, p: float) -> np.ndarray:
    """Sorted positions in [0, count) of independent Bernoulli(``p``) successes."""
    if p <= 0 or count == 0:
        return np.zeros(0, np.int64)
    if p >= 1:
        return np.arange(count, dtype=np.int64)
    found, last = [], -1
    while True:
        expect = (count - last) * p
        gaps = rng.geometric(p, size=int(expect + 6 * np.sqrt(expect) + 16))
        pos = last + np.cumsum(gaps, dtype=np.int64)
        found.append(pos[pos < count])
        if pos[-1] >= count:
            return np.concatenate(found)
        last = int(pos[-1])


def encode(x: np.ndarray, fmt: str, top: float) -> np.ndarray:
    """``x`` stored in ``fmt``, as unsigned integers of its width."""
    if fmt == "int8":
        step = top / 127 if top > 0 else 1.0
        return np.clip(np.rint(x.astype(np.float64) / step), -127, 127).astype(np.int8).view(np.uint8)
    with np.errstate(over="ignore"):  # a value beyond fp16's range is stored as Inf, as the hardware would
        return x.astype(np.float16 if fmt == "fp16" else np.float32).view(FORMATS[fmt][0])


def decode(bits: np.ndarray, fmt: str, top: float, dtype: np.dtype) -> np.ndarray:
    if fmt == "int8":
        step = top / 127 if top > 0 else 1.0
        return (bits.view(np.int8).astype(np.float64) * step).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return bits.view(np.float16 if fmt == "fp16" else np.float32).astype(dtype)


def flip(stored: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``stored`` (unsigned integers) with the bits at flat bit ``positions`` inverted."""
    width = stored.dtype.itemsize * 8
    mask = np.zeros(stored.size, stored.dtype)
    np.bitwise_or.at(mask, positions // width, (np.ones(1, stored.dtype) << (positions % width).astype(stored.dtype)))
    return stored ^ mask.reshape(stored.shape)


@dataclass(frozen=True)
class BitFlip(NoiseModel):
    """``bitflip``: independent bit flips at bit error rate p in a storage format."""

    format: str = "int8"

    name = "bitflip"
    axis = Axis("bit error rate", "", "log", "log:1e-9:1e-1:17", lowest=0.0, highest=0.5, positive=True)
    averages = False  # a flipped stored bit stays flipped however often it is read
    draws = 2

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"unknown storage format {self.format!r}; choose {', '.join(FORMATS)}")

    def width(self) -> int:
        return FORMATS[self.format][1]

    def draw_bytes(self, values: int, top: float) -> float:
        """A flip's position (int64) and its u (float32) for every bit flipped at rate ``top``."""
        return 12.0 * self.width() * top * values

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
        positions = flip_positions(rng, int(np.prod(shape, dtype=np.int64)) * self.width(), top)
        return [positions, rng.uniform(0.0, top, size=positions.size).astype(np.float32)]

    def perturb(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        positions, u = draws
        stored = encode(x, self.format, ref.absmax)
        return decode(flip(stored, positions[u < strength]), self.format, ref.absmax, x.dtype)

    def to_json(self) -> dict:
        return {"kind": self.name, "format": self.format}
