"""The noise vocabulary shared by the ONNX passes, the evaluator, the trainer and the reports.

A sweep varies one scalar ``sigma`` (for mixed noise: the amplitude A, or the swept component);
:meth:`NoiseSpec.components` maps it to the additive and multiplicative standard deviations.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from wn_onnx.errors import ConfigError

Kind = Literal["add", "mul", "mixed"]
Order = Literal["mul-first", "add-first"]
KINDS: tuple[str, ...] = ("add", "mul", "mixed")
ORDERS: tuple[str, ...] = ("mul-first", "add-first")


@dataclass(frozen=True)
class NoiseSpec:
    """What noise is injected: kind, order (mixed only) and how a swept sigma splits.

    Mixed noise takes either ``ratio`` r (sigma_add = A*r, sigma_mul = A*(1-r), A swept) or one
    fixed component (``sigma_mul`` or ``sigma_add``) with the other one swept.
    """

    kind: Kind = "add"
    order: Order | None = None
    ratio: float | None = None
    sigma_mul: float | None = None
    sigma_add: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown noise kind {self.kind!r}; choose one of {', '.join(KINDS)}")
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
    def draws(self) -> int:
        """Independent standard-normal tensors one noisy evaluation needs (2 for mixed)."""
        return 2 if self.kind == "mixed" else 1

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
        return cls(d.get("kind", "add"), d.get("order"), d.get("ratio"), d.get("sigma_mul"), d.get("sigma_add"))


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


_GRID = re.compile(r"^(log|lin):([^:]+):([^:]+):(\d+)$")


MAX_GRID = 10_000  # σ values in one grid: far more than any fit needs


def parse_grid(text: str) -> np.ndarray:
    """``log:1e-2:1e10:49``, ``lin:0:2:21`` or ``0.1,0.2,0.5`` → sorted unique float64 array."""
    text = text.strip()
    m = _GRID.match(text)
    try:
        if m:
            kind, a, b, n = m.group(1), float(m.group(2)), float(m.group(3)), int(m.group(4))
            if n < 1:
                raise ValueError
            if n > MAX_GRID:
                raise ConfigError(f"sigma grid {text!r} has {n} values; at most {MAX_GRID}")
            if kind == "log":
                if a <= 0 or b <= 0:
                    raise ConfigError(f"log grid needs positive bounds: {text!r}")
                grid = np.logspace(np.log10(a), np.log10(b), n)
            else:
                grid = np.linspace(a, b, n)
        else:
            if text.count(",") >= MAX_GRID:
                raise ConfigError(f"sigma grid has more than {MAX_GRID} values")
            grid = np.array([float(v) for v in text.split(",") if v.strip()], dtype=np.float64)
    except ConfigError:  # a ValueError too: keep its own message
        raise
    except ValueError:
        raise ConfigError(
            f"cannot read sigma grid {text!r}: use log:START:STOP:N, lin:START:STOP:N or a comma list"
        ) from None
    if grid.size == 0:
        raise ConfigError(f"sigma grid {text!r} is empty")
    if not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise ConfigError(f"sigma grid {text!r} must hold finite values >= 0")
    return np.unique(grid)


def default_grid(spec: NoiseSpec) -> np.ndarray:
    """The reference sweeps' grids (docs/method.md, "Grids"): add 49 log 1e-2..1e10; mul 21 lin 0..2 plus
    41 log 1..1e10; mixed amplitude 25 log 1e-2..1e10."""
    if spec.kind == "add":
        return parse_grid("log:1e-2:1e10:49")
    if spec.kind == "mul":
        return np.unique(np.concatenate([parse_grid("lin:0:2:21"), parse_grid("log:1:1e10:41")]))
    return parse_grid("log:1e-2:1e10:25")
