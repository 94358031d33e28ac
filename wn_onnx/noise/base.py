"""What every noise model declares: its strength axis, where it acts, its draws and its numpy form.

A scan sweeps one scalar per evaluation. The engine, the sweep loop and the fit work on a
*strength*: a positive number that grows with the damage (σ for Gaussian noise, the bit error
rate for bit flips, 2^-bits for quantisation). The axis maps the model's own levels (what a user
types in ``--levels`` and reads in a report: bits, seconds) to strengths and back.

docs/noise-models.md describes the interface for plug-ins with a complete example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from wn_onnx.errors import ConfigError, PluginError
from wn_onnx.noise.grid import parse_grid

TARGETS = ("activations", "weights")


class NoiseModelFailed(PluginError):
    """A noise model raised, or returned something that is not a perturbed copy, while a scan ran it:
    the user's model is at fault, not a point of the graph (a scan stops, it does not mark a point failed)."""


@dataclass(frozen=True)
class Axis:
    """A noise model's strength axis.

    ``more`` is ``"up"`` when the damage grows with the level (σ, bit error rate, time) and
    ``"down"`` when it falls (bits); the strength of a down axis is 2^-level, the relative step
    of a b-bit quantiser. ``integer``: levels are whole numbers (bits)."""

    name: str
    unit: str = ""
    scale: str = "log"  # how the default grid and figures space the levels: log, lin
    default: str = "log:1e-2:1e10:49"  # the grid text of --levels when none is given
    more: str = "up"
    integer: bool = False
    lowest: float = 0.0  # smallest valid level (inclusive)
    highest: float = float("inf")  # largest valid level (inclusive)
    positive: bool = False  # the lowest level itself is not valid (a bit error rate of 0)
    units: dict[str, float] = field(default_factory=dict, hash=False)  # suffixes a grid may give levels in (1h, 1y)

    def strength(self, levels: np.ndarray | float) -> np.ndarray:
        """Levels → strengths (increasing with the damage)."""
        v = np.asarray(levels, np.float64)
        return np.exp2(-v) if self.more == "down" else v

    def level(self, strength: np.ndarray | float) -> np.ndarray:
        """Strengths → levels (the inverse of :meth:`strength`)."""
        s = np.asarray(strength, np.float64)
        return -np.log2(s) if self.more == "down" else s

    def grid(self, text: str | None) -> np.ndarray:
        """A grid text in this axis's levels → sorted unique strengths, each level checked."""
        text = text or self.default
        levels = parse_grid(self._in_base_unit(text), "sigma grid" if self.name == "σ" else f"{self.name} grid", text)
        if self.integer:
            if not np.all(levels == np.round(levels)):
                raise ConfigError(f"{self.name} takes whole numbers; got {text or self.default!r}")
        low = np.any(levels <= self.lowest) if self.positive else np.any(levels < self.lowest)
        if low or np.any(levels > self.highest):
            bracket = "(" if self.positive else "["
            bad = levels[(levels <= self.lowest) | (levels > self.highest)] if self.positive else levels[
                (levels < self.lowest) | (levels > self.highest)]
            raise ConfigError(f"{self.name} must lie in {bracket}{self.lowest:g}, {self.highest:g}]; got {bad[0]:g}")
        return np.unique(self.strength(levels))

    def _in_base_unit(self, text: str) -> str:
        """``text`` with every number that carries one of the axis's unit suffixes (``1h``, ``2.5y``)
        written in the base unit."""
        if not self.units:
            return text
        suffixes = "|".join(sorted(map(re.escape, self.units), key=len, reverse=True))

        def convert(m: re.Match) -> str:
            return repr(float(m.group(1)) * self.units[m.group(2)])

        return re.sub(rf"(\d+(?:\.\d*)?(?:e[+-]?\d+)?)({suffixes})(?![A-Za-z])", convert, text)

    def to_json(self) -> dict:
        return {"name": self.name, "unit": self.unit, "scale": self.scale, "more": self.more}


@dataclass(frozen=True)
class Reference:
    """Statistics of a perturbed tensor's clean values that a model scales by: the largest |value|
    over the whole tensor and per output channel (weights), or over the scanned samples (activations)."""

    absmax: float
    channel_absmax: np.ndarray | None = None  # broadcastable against the tensor (per output channel)
    channel_axis: int | None = None  # the weight's output-channel axis

    @classmethod
    def of_weight(cls, w: np.ndarray, channel_axis: int | None) -> Reference:
        a = np.abs(w.astype(np.float64))
        top = float(a.max()) if a.size else 0.0
        if channel_axis is None or w.ndim == 0:
            return cls(top)
        axes = tuple(i for i in range(w.ndim) if i != channel_axis % w.ndim)
        return cls(top, a.max(axis=axes, keepdims=True), channel_axis % w.ndim)

    def row_sums(self, w: np.ndarray) -> np.ndarray:
        """``w`` applied to an all-ones input: per output channel, the sum over the other axes."""
        if self.channel_axis is None:
            return np.atleast_1d(w.sum(dtype=np.float64))
        return w.sum(axis=tuple(i for i in range(w.ndim) if i != self.channel_axis), dtype=np.float64)


class NoiseModel:
    """The interface of a noise model (built-ins and plug-ins alike).

    Subclasses set ``name`` and ``axis`` and implement :meth:`draw` and :meth:`perturb`; the
    rest has defaults. A model is a frozen, hashable value: reports store :meth:`to_json`."""

    name: ClassVar[str] = ""
    axis: ClassVar[Axis] = Axis("level")
    targets: ClassVar[tuple[str, ...]] = TARGETS  # where it can act
    deterministic: ClassVar[bool] = False  # no random draws: one repeat says everything
    averages: ClassVar[bool] = True  # repeated execution averages it away (plan applies)
    draws: ClassVar[int] = 1  # arrays one draw holds (the Gaussian mixed kind: 2)

    @property
    def kind(self) -> str:
        return self.name

    @property
    def swept(self) -> str:
        """The swept quantity's name, for axis labels and tables."""
        return self.axis.name

    def default_levels(self) -> np.ndarray:
        """The strengths of the default grid."""
        return self.axis.grid(None)

    def levels(self, text: str | None) -> np.ndarray:
        """The strengths of grid ``text`` (in the axis's levels), or of the default grid."""
        return self.axis.grid(text) if text else self.default_levels()

    def components(self, strength: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(strength, 0): the sweep loop's two components; a strength of 0 is the clean model."""
        s = np.asarray(strength, np.float64)
        return s, np.zeros_like(s)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
        """The random numbers of one draw of a tensor of ``shape``, shared by every strength up to
        ``top`` (common random numbers: each strength's perturbation is still an exact sample)."""
        raise NotImplementedError

    def perturb(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        """``x`` perturbed at ``strength`` with ``draws`` (from :meth:`draw`); same dtype and shape."""
        raise NotImplementedError

    def draw_bytes(self, values: int, top: float) -> float:
        """Bytes one draw for ``values`` numbers holds (what the memory budget counts)."""
        return 4.0 * self.draws * values

    @property
    def reads_per_sample(self) -> bool:
        """Weights read again for every input: part of the noise is drawn per sample, as output noise
        of variance :meth:`read_variance` propagated through the layer (graph_passes/read_noise.py)."""
        return False

    def read_variance(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray | None:
        """Per-weight variance of the noise each read adds (None: no per-sample reads)."""
        return None

    def apply(self, x: np.ndarray, sa: float, sm: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        """:meth:`perturb` at the sweep loop's components (:meth:`components`: the strength is ``sa``)."""
        return self.perturb(x, sa, draws, ref)

    def to_json(self) -> dict:
        return {"kind": self.name}


def checked_draw(model: NoiseModel, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
    """``model.draw``, its failure one :class:`NoiseModelFailed` naming the model."""
    try:
        return list(model.draw(rng, shape, top))
    except Exception as err:
        raise NoiseModelFailed(f"noise model {model.name!r} failed in draw(): {type(err).__name__}: {err}") from None


def checked_apply(model: NoiseModel, x: np.ndarray, sa: float, sm: float, draws: list, ref: Reference) -> np.ndarray:
    """``model.apply``, its failure or a result of another shape one :class:`NoiseModelFailed`; the
    result in ``x``'s dtype."""
    try:
        out = np.asarray(model.apply(x, sa, sm, draws, ref))
    except Exception as err:
        raise NoiseModelFailed(f"noise model {model.name!r} failed in perturb(): {type(err).__name__}: {err}") from None
    if out.shape != x.shape or not np.issubdtype(out.dtype, np.number):
        raise NoiseModelFailed(f"noise model {model.name!r}: perturb() returned {out.dtype} of shape {out.shape} "
                               f"for {x.dtype} of shape {x.shape}")  # fmt: skip
    return out.astype(x.dtype, copy=False)
