"""Gaussian noise (the paper's): additive, multiplicative or mixed, shared by the ONNX passes, the
evaluator, the trainer and the reports.

A sweep varies one scalar ``sigma`` (for mixed noise: the amplitude A, or the swept component);
:meth:`NoiseSpec.components` maps it to the additive and multiplicative standard deviations.
On activations the ONNX functions of graph_passes/noise_functions.py apply it; on weights
:meth:`NoiseSpec.perturb` does, additive noise relative to the layer's largest |w| by default
(``W + σ·max|W|·z``, the analog-hardware convention) or absolute (``weight_scale="absolute"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import Axis, NoiseModel, Reference
from wn_onnx.noise.grid import parse_grid

Kind = Literal["add", "mul", "mixed"]
Order = Literal["mul-first", "add-first"]
KINDS: tuple[str, ...] = ("add", "mul", "mixed")
ORDERS: tuple[str, ...] = ("mul-first", "add-first")
WEIGHT_SCALES: tuple[str, ...] = ("max", "absolute")


@dataclass(frozen=True)
class NoiseSpec(NoiseModel):
    """What noise is injected: kind, order (mixed only) and how a swept sigma splits.

    Mixed noise takes either ``ratio`` r (sigma_add = A*r, sigma_mul = A*(1-r), A swept) or one
    fixed component (``sigma_mul`` or ``sigma_add``) with the other one swept.
    """

    kind: Kind = "add"
    order: Order | None = None
    ratio: float | None = None
    sigma_mul: float | None = None
    sigma_add: float | None = None
    weight_scale: str | None = None  # on weights: additive σ relative to max|W| ("max", the default) or "absolute"

    axis = Axis("σ")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown noise kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.weight_scale not in (None, *WEIGHT_SCALES):
            raise ConfigError(f"unknown weight scale {self.weight_scale!r}; choose max or absolute")
        if self.kind != "mixed":
            if self.order or self.ratio is not None or self.sigma_mul is not None or self.sigma_add is not None:
                raise ConfigError("order, sigma_ratio, sigma_mul and sigma_add apply to mixed noise only")
            return
        if self.order not in ORDERS:
            raise ConfigError(f"mixed noise needs an order: {' or '.join(ORDERS)}, got {self.order!r}")
        given = sum(v is not None for v in (self.ratio, self.sigma_mul, self.sigma_add))
        if given != 1:
            raise ConfigError("mixed noise needs exactly one of sigma_ratio, sigma_mul, sigma_add")
        if self.ratio is not None and not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"sigma_ratio must lie in [0, 1], got {self.ratio}")
        for name, value in (("--sigma-mul", self.sigma_mul), ("--sigma-add", self.sigma_add)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite value >= 0, got {value}")

    @property
    def name(self) -> str:
        return self.kind

    @property
    def draws(self) -> int:
        """Independent standard-normal tensors one noisy evaluation needs (2 for mixed)."""
        return 2 if self.kind == "mixed" else 1

    def default_levels(self) -> np.ndarray:
        return default_grid(self)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
        return [rng.standard_normal(shape, dtype=np.float32) for _ in range(self.draws)]

    def perturb(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        sa, sm = self.components(strength)
        return self.apply(x, float(sa), float(sm), draws, ref)

    def apply(self, x: np.ndarray, sa: float, sm: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        """Noise on a weight tensor: :func:`apply_noise`, the additive σ times max|W| unless absolute.
        Computed in float32 at least, then cast back: in float16 a σ above 65504 is itself inf and
        would make every weight inf or NaN, where only the weights float16 cannot hold should be."""
        unit = 1.0 if self.weight_scale == "absolute" else ref.absmax
        wide = x.astype(np.promote_types(x.dtype, np.float32), copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow of the result: counted as non-finite
            noisy = apply_noise(wide, draws[0], draws[1] if len(draws) > 1 else None, sa * unit, sm, self)
            return noisy.astype(x.dtype, copy=False)

    def components(self, sigma: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(sigma_add, sigma_mul) for swept value(s) ``sigma``."""
        s = np.asarray(sigma, dtype=np.float64)
        zero = np.zeros_like(s)
        if self.kind == "add":
            return s, zero
        if self.kind == "mul":
            return zero, s
        if self.ratio is not None:
            return s * self.ratio, s * (1.0 - self.ratio)
        if self.sigma_mul is not None:
            return s, zero + self.sigma_mul
        return zero + self.sigma_add, s

    @property
    def swept(self) -> str:
        """Human name of the swept quantity, for axis labels and tables."""
        if self.kind != "mixed":
            return "σ"
        if self.ratio is not None:
            return "A"
        return "σ_add" if self.sigma_mul is not None else "σ_mul"

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        d.setdefault("order", None)
        return d

    @classmethod
    def from_json(cls, d: dict | None) -> NoiseSpec:
        """Inverse of :meth:`to_json` (reports and plans store the noise that way)."""
        d = d or {}
        return cls(d.get("kind", "add"), d.get("order"), d.get("ratio"), d.get("sigma_mul"), d.get("sigma_add"),
                   d.get("weight_scale"))  # fmt: skip


def apply_noise(
    x: np.ndarray, z: np.ndarray, z2: np.ndarray | None, sigma_add: np.ndarray, sigma_mul: np.ndarray, spec: NoiseSpec
) -> np.ndarray:
    """Numpy twin of the ONNX noise functions (see graph_passes.noise_functions).

    ``sigma_*`` broadcast against ``x``; for mixed noise ``z`` feeds the component applied
    first and ``z2`` the second, exactly as the ONNX functions take them.
    """
    sa = np.asarray(sigma_add, dtype=x.dtype)
    sm = np.asarray(sigma_mul, dtype=x.dtype)
    if spec.kind == "add":
        return x + sa * z
    if spec.kind == "mul":
        return x * (1 + sm * z)
    if spec.order == "mul-first":
        return x * (1 + sm * z) + sa * z2
    return (x + sa * z) * (1 + sm * z2)


def default_grid(spec: NoiseSpec) -> np.ndarray:
    """The reference sweeps' grids (docs/method.md, "Grids"): add 49 log 1e-2..1e10; mul 21 lin 0..2 plus
    41 log 1..1e10; mixed amplitude 25 log 1e-2..1e10."""
    if spec.kind == "add":
        return parse_grid("log:1e-2:1e10:49")
    if spec.kind == "mul":
        return np.unique(np.concatenate([parse_grid("lin:0:2:21"), parse_grid("log:1:1e10:41")]))
    return parse_grid("log:1e-2:1e10:25")
