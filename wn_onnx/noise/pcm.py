"""Phase-change memory (PCM) weights over time: the statistical model calibrated on a million IBM
devices (Nandakumar et al., ICECS 2019; Joshi et al., Nature Communications 2020), with the
constants of aihwkit's ``PCMLikeNoiseModel`` (docs/method.md, "Analog hardware" has the formulas).

Per layer, with w_max = max|W|: each weight is a differential pair g⁺ = g_max·max(w, 0)/w_max,
g⁻ = g_max·max(−w, 0)/w_max; both devices are programmed with noise, drift with their own
exponent ν and are read with 1/f noise at time t after programming; the weight is
(g⁺ − g⁻)·w_max/g_max. Programming noise, ν and the read noise are drawn once per repeat (one
programmed chip, read once). Global drift compensation scales the layer's output by
Σ_c|Σ_j W_prog,cj| / Σ_c|Σ_j W_t,cj|: an all-ones input read at programming time and at t
(``global``, the default); ``onehot`` reads one-hot inputs instead (Σ|W_prog,ij| / Σ|W_t,ij|), as
aihwkit's current ``GlobalDriftCompensation`` does with its identity readout — it also works on
layers whose rows sum to about zero, where the all-ones readout sees no signal. Acts on weights
only; repeated execution reads the same devices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wn_onnx.errors import ConfigError
from wn_onnx.noise.base import Axis, NoiseModel, Reference

G_REFERENCE = 25.0  # µS: the g_max the programming polynomial was fitted at
PROG_COEFF = (0.26348, 1.9650, -1.1731)  # σ_prog in µS at G_REFERENCE, polynomial in g_T/g_max
T0 = 20.0  # s: the first read after programming (drift reference)
T_READ = 250e-9  # s: the read duration of the 1/f noise fit
G_FLOOR = 1e-7  # relative conductance floor of ν's statistics
TIME_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365.25 * 86400.0}
COMPENSATIONS = ("global", "onehot", "none")
READ_NOISE = ("repeat", "per-sample")


def programmed(g_target: np.ndarray, z: np.ndarray, g_max: float, scale: float) -> np.ndarray:
    """g_prog = max(g_T + σ_prog·z, 0), σ_prog = (c₀ + c₁·g_T/g_max + c₂·(g_T/g_max)²)·g_max/25 µS."""
    r = g_target / g_max
    sigma = (PROG_COEFF[0] + PROG_COEFF[1] * r + PROG_COEFF[2] * r * r) * g_max / G_REFERENCE
    return np.maximum(g_target + scale * sigma * z, 0.0)


def drift_exponent(g_target: np.ndarray, z: np.ndarray, g_max: float, scale: float) -> np.ndarray:
    """ν = |μ_ν + σ_ν·z|·scale, μ_ν and σ_ν clipped linear functions of ln(g_T/g_max)."""
    log_g = np.log(np.maximum(np.abs(g_target / g_max), G_FLOOR))
    mu = np.clip(-0.0155 * log_g + 0.0244, 0.049, 0.1)
    sd = np.clip(-0.0125 * log_g - 0.0059, 0.008, 0.045)
    return np.abs(mu + sd * z) * scale


def read_at(g_prog: np.ndarray, nu: np.ndarray, z: np.ndarray, t: float, g_max: float, scale: float) -> np.ndarray:
    """g(t) = max(g_drift + |g_drift|·σ_read·z, 0), g_drift = g_prog·((t + t₀)/t₀)^(−ν),
    σ_read = min(0.0088/max((g_prog/g_max)^0.65, 1e-3), 0.2)·√ln((t + t₀ + t_read)/(2·t_read))."""
    t1 = t + T0
    g_drift = g_prog * (t1 / T0) ** (-nu)
    q_s = np.minimum(0.0088 / np.maximum((np.abs(g_prog) / g_max) ** 0.65, 1e-3), 0.2)
    sigma = q_s * np.sqrt(np.log((t1 + T_READ) / (2 * T_READ)))
    return np.maximum(g_drift + np.abs(g_drift) * scale * sigma * z, 0.0)


@dataclass(frozen=True)
class PCM(NoiseModel):
    """``pcm``: PCM weights read at time t after programming (axis: time, seconds, 1 s … 10 years)."""

    g_max: float = 25.0  # µS
    prog_scale: float = 1.0
    drift_scale: float = 1.0
    read_scale: float = 1.0
    compensation: str = "global"
    read_noise: str = "repeat"  # "per-sample": every input reads the devices again (engine: graph_passes/read_noise.py)

    name = "pcm"
    axis = Axis("time", "s", "log", "log:1s:10y:9", positive=True, units=TIME_UNITS)
    targets = ("weights",)
    averages = False  # every execution reads the same programmed devices
    draws = 6  # programming, drift and read noise, for each device of the pair

    def __post_init__(self) -> None:
        for name in ("g_max", "prog_scale", "drift_scale", "read_scale"):
            value = getattr(self, name)
            if not (np.isfinite(value) and (value > 0 if name == "g_max" else value >= 0)):
                raise ConfigError(f"pcm {name.replace('_', '-')} must be a finite number {'> 0' if name == 'g_max' else '>= 0'}, got {value}")
        if self.compensation not in COMPENSATIONS:
            raise ConfigError(f"unknown drift compensation {self.compensation!r}; choose global, onehot or none")
        if self.read_noise not in READ_NOISE:
            raise ConfigError(f"unknown read noise {self.read_noise!r}; choose repeat or per-sample")

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
        return [rng.standard_normal(shape) for _ in range(self.draws)]

    def conductances(self, w: np.ndarray, t: float, draws: list[np.ndarray], w_max: float, read: bool = True):
        """(g_prog, g(t)) of the pair, each a (g⁺, g⁻) tuple, in µS (float64); ``read`` False: g(t)
        without read noise (the drifted conductances)."""
        w = w.astype(np.float64)
        unit = self.g_max / w_max if w_max > 0 else 0.0
        targets = (np.maximum(w, 0.0) * unit, np.maximum(-w, 0.0) * unit)
        prog, now = [], []
        for k, g_t in enumerate(targets):
            g_p = programmed(g_t, draws[k], self.g_max, self.prog_scale)
            nu = drift_exponent(g_t, draws[2 + k], self.g_max, self.drift_scale)
            prog.append(g_p)
            now.append(read_at(g_p, nu, draws[4 + k], t, self.g_max, self.read_scale if read else 0.0))
        return tuple(prog), tuple(now)

    @property
    def reads_per_sample(self) -> bool:
        return self.read_noise == "per-sample"

    def read_variance(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray | None:
        """With per-sample read noise: each weight's read-noise variance at ``strength`` in weight
        units (times the compensation's square), the two devices of the pair independent; the clip
        of a read conductance at 0 is left out (the output noise is Gaussian). None otherwise."""
        if self.read_noise != "per-sample":
            return None
        if ref.absmax <= 0:  # an all-zero layer: no device holds a conductance to read
            return np.zeros_like(x)
        prog, now = self.conductances(x, strength, draws, ref.absmax, read=False)
        t1 = strength + T0
        var = np.zeros(x.shape)
        for g_p, g_d in zip(prog, now, strict=True):
            q_s = np.minimum(0.0088 / np.maximum((np.abs(g_p) / self.g_max) ** 0.65, 1e-3), 0.2)
            sigma = self.read_scale * q_s * np.sqrt(np.log((t1 + T_READ) / (2 * T_READ)))
            var += (np.abs(g_d) * sigma) ** 2
        back = ref.absmax / self.g_max
        return (var * back**2 * self._compensation(prog, now, back, ref) ** 2).astype(x.dtype)

    def _compensation(self, prog, now, back: float, ref: Reference) -> float:
        """The readout at programming time over the readout at t: one all-ones input (``global``:
        Σ_c|Σ_j W_cj|), one-hot inputs (``onehot``: Σ|W_ij|), or 1 (``none``)."""
        if self.compensation == "none":
            return 1.0
        then, now_w = (prog[0] - prog[1]) * back, (now[0] - now[1]) * back
        if self.compensation == "global":
            then, now_w = ref.row_sums(then), ref.row_sums(now_w)
        read_then, read_now = np.abs(then).sum(), np.abs(now_w).sum()
        return float(read_then / read_now) if read_now > 0 else 1.0

    def perturb(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        if ref.absmax <= 0:
            return x
        prog, now = self.conductances(x, strength, draws, ref.absmax, read=self.read_noise == "repeat")
        back = ref.absmax / self.g_max
        w_t = (now[0] - now[1]) * back
        return (w_t * self._compensation(prog, now, back, ref)).astype(x.dtype)

    def to_json(self) -> dict:
        return {"kind": self.name, "g_max": self.g_max, "prog_scale": self.prog_scale, "drift_scale": self.drift_scale,
                "read_scale": self.read_scale, "compensation": self.compensation,
                **({} if self.read_noise == "repeat" else {"read_noise": self.read_noise})}  # fmt: skip
