"""One scan configuration: every setting of a scan, checked where it is made.

``wn_onnx.scan``, ``check``, ``plan --evaluate`` and ``analyze`` and every command of the CLI
build a :class:`ScanConfig`; the scanner and its workers read it. A setting out of range, or
two settings that exclude each other, is one :class:`~wn_onnx.errors.ConfigError` line here,
whoever made the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from wn_onnx.errors import ConfigError
from wn_onnx.io.config import MAX_PARALLEL, MAX_REPEATS, MAX_SEED
from wn_onnx.metrics import get_metric
from wn_onnx.noise import TARGETS, NoiseModel, default_repeats, make_noise
from wn_onnx.noise.converters import Converters, ConvertersModel

if TYPE_CHECKING:
    from wn_onnx.engine import SweepSettings

MODES = ("walking", "global", "both")
SIGMA_SCALES = ("absolute", "std")
ESTIMATORS = ("grid", "sequential")
GRANULARITIES = ("layer", "op")
LIMIT_MODES = ("stratified", "first")
DEVICES = ("cpu", "cuda")
WALKS = ("suffix", "full")


@dataclass(frozen=True, eq=False)
class ScanConfig:
    """Every setting of a scan (README "Python API"; the CLI's options of the same names).

    ``noise``: a model's name (``"add"``, ``"mul"``, ``"quant"``, ``"pcm"``, ``"module:Name"``) or a
    :class:`~wn_onnx.noise.NoiseModel` (``make_noise`` with options); ``levels``: a grid text
    (``"log:1e-2:1e2:21"``) or values in the model's levels (σ, bits, bit error rate, seconds);
    default the model's grid. ``repeats``: default 5 on activations, 10 on weights. ``memory``:
    bytes or ``"2G"``. ``limit`` / ``limit_mode`` / ``feeds`` / ``label_free`` say how the data
    are read; ``jobs`` (processes), ``workers`` (a local Dask cluster) or ``scheduler`` (a Dask
    address) where the points are walked. ``walk="full"`` runs the whole noisy graph for every σ
    (the reference path the suffix runs are checked against)."""

    noise: NoiseModel | str = "add"
    on: str = "activations"
    levels: Sequence[float] | str | None = None
    mode: str = "both"
    at: str | None = None
    repeats: int | None = None
    seed: int = 0
    batch_size: int = 1024
    redraw: bool = False
    global_after_bn: bool = True
    label_free: bool = False
    adaptive: bool = False
    tolerance: float = 0.05
    estimator: str = "grid"
    granularity: str = "layer"
    sigma_scale: str = "absolute"
    metric: str = "top1"
    metric_timeout: float | None = None
    converters: Converters | None = None
    limit: int | None = None
    limit_mode: str = "stratified"
    feeds: Mapping[str, Any] | None = field(default=None, repr=False)
    device: str = "cpu"
    threads: int = 0
    jobs: int = 1
    workers: int = 0
    scheduler: str | None = None
    memory: int | str | None = None
    walk: str = "suffix"
    grid: tuple[float, ...] = field(init=False, repr=False)  # ``levels`` in the model's strengths
    repeats_given: int | None = field(init=False, repr=False)  # None: the default of ``on`` (replace keeps it so)

    def __post_init__(self) -> None:
        self._check_types()
        spec = self.noise if isinstance(self.noise, NoiseModel) else make_noise(str(self.noise))
        self._set("noise", spec)
        self._set("grid", tuple(float(v) for v in spec.levels(_grid_text(self.levels))))
        self._set("repeats_given", self.repeats)
        self._set("repeats", default_repeats(self.on) if self.repeats is None else self.repeats)
        if isinstance(self.memory, str):
            from wn_onnx.engine.memory import parse_size

            self._set("memory", parse_size(self.memory))
        self._set("metric", get_metric(self.metric, self.metric_timeout).name)
        self._check_ranges()
        self._check_choices()
        self._check_target()
        self._check_estimator()

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # normalised once, at construction (frozen afterwards)

    def replace(self, **changes: Any) -> ScanConfig:
        """A copy with ``changes`` (checked like a new configuration)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self) if f.init})
        if unknown:
            raise ConfigError(f"unknown scan setting {unknown[0]!r}")
        return replace(self, **{"repeats": self.repeats_given, **changes})

    @property
    def spec(self) -> NoiseModel:
        """The noise model (``noise`` resolved)."""
        assert isinstance(self.noise, NoiseModel)
        return self.noise

    @property
    def sigmas(self) -> np.ndarray:
        """The grid in the model's strengths."""
        return np.asarray(self.grid, np.float64)

    @property
    def noisy_outputs(self) -> bool:
        """Converter output noise: random even where the noise model is deterministic."""
        return self.converters is not None and self.converters.out_noise > 0

    @property
    def deterministic(self) -> bool:
        """Every repeat would give the same numbers: one repeat is run."""
        return self.spec.deterministic and not self.noisy_outputs

    def settings(self) -> SweepSettings:
        """The engine's sweep settings: one repeat for a deterministic model, and draws shared by
        every strength of the grid (adaptive rounds too)."""
        from wn_onnx.engine import SweepSettings

        sigmas = self.sigmas
        return SweepSettings(sigmas, self.spec, 1 if self.deterministic else int(self.repeats), self.seed,
                             self.batch_size, self.redraw, self.walk, self.metric, float(np.max(sigmas)),
                             self.metric_timeout, self.converters)  # fmt: skip

    def _check_types(self) -> None:
        """Each setting's kind, before any is used: a text where a switch belongs is named, not read as true."""
        kinds = {bool: ("redraw", "global_after_bn", "label_free", "adaptive"),
                 str: ("on", "mode", "estimator", "granularity", "sigma_scale", "metric", "limit_mode", "device", "walk"),
                 (str, type(None)): ("at", "scheduler"), (int, float): ("tolerance",),
                 (int, float, type(None)): ("metric_timeout",)}  # fmt: skip
        for kind, names in kinds.items():
            for name in names:
                value = getattr(self, name)
                if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                    raise ConfigError(f"{name} must be {_KIND_NAMES[kind]}, got {value!r}")
        if not isinstance(self.noise, NoiseModel | str):
            raise ConfigError(f"noise must be a noise model's name or a NoiseModel, got {self.noise!r}")
        if self.converters is not None and not isinstance(self.converters, Converters):
            raise ConfigError(f"converters must be a wn_onnx.noise.Converters, got {self.converters!r}")
        if self.feeds is not None and not isinstance(self.feeds, Mapping | list | tuple):
            raise ConfigError(f"feeds must map input names to constants (or list NAME=VALUE texts), got {self.feeds!r}")

    def _check_ranges(self) -> None:
        limits = (("repeats", 1, MAX_REPEATS), ("seed", 0, MAX_SEED), ("batch_size", 1, None),
                  ("threads", 0, MAX_PARALLEL), ("jobs", 1, MAX_PARALLEL), ("workers", 0, MAX_PARALLEL),
                  ("limit", 1, None), ("memory", 1, None))  # fmt: skip
        for name, low, high in limits:
            value = getattr(self, name)
            if value is None and name in ("limit", "memory"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            if value < low or (high is not None and value > high):
                bound = f"[{low}, {high}]" if high is not None else f">= {low}"
                raise ConfigError(f"{name} must lie in {bound}, got {value}")
        if not 0 < self.tolerance < 1:
            raise ConfigError("tolerance must lie in (0, 1)")

    def _check_choices(self) -> None:
        choices = (("on", TARGETS, "target"), ("mode", MODES, "scan mode"), ("sigma_scale", SIGMA_SCALES, "σ scale"),
                   ("granularity", GRANULARITIES, "granularity"), ("estimator", ESTIMATORS, "estimator"),
                   ("limit_mode", LIMIT_MODES, "limit mode"), ("device", DEVICES, "device"), ("walk", WALKS, "walk"))  # fmt: skip
        for name, allowed, what in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {what} {getattr(self, name)!r}; choose {', '.join(allowed)}")

    def _check_target(self) -> None:
        """Where the noise model can act, and which settings apply there."""
        spec, conv = self.spec, self.converters
        if conv is not None and conv.active and self.on != "weights":
            raise ConfigError("converters (--dac-bits, --adc-bits, --out-noise) belong to analog layers: scan --on weights")
        if isinstance(spec, ConvertersModel) and conv is not None and conv.dac_bits and conv.adc_bits:
            raise ConfigError("the converters model sweeps the bits that --dac-bits and --adc-bits fix: leave one free")
        if self.on not in spec.targets:
            hint = ": add --on weights" if spec.targets == ("weights",) else ""
            raise ConfigError(f"noise model {spec.name!r} acts on {' and '.join(spec.targets)}, not on {self.on}{hint}")
        if self.on == "activations" and getattr(spec, "weight_scale", None) is not None:
            raise ConfigError("--weight-scale applies to weight noise (--on weights)")
        if self.on == "weights" and getattr(spec, "percentile", None) is not None:
            raise ConfigError("--percentile clips activations; a weight's quantiser takes its largest |w| (--per-tensor for one scale)")
        if self.on == "weights" and not self.deterministic and self.repeats < 2:
            raise ConfigError("weight noise is one draw per repeat (one chip): one repeat cannot tell the spread between "
                              "chips; give --repeats 2 or more")  # fmt: skip
        if self.sigma_scale == "std" and (spec.kind != "add" or self.on == "weights"):
            raise ConfigError("σ relative to the activation std applies to additive noise on activations "
                              "(multiplicative noise is relative already, additive weight noise is relative to max|W|)")  # fmt: skip

    def _check_estimator(self) -> None:
        """The sequential estimator's conditions on the sweep settings."""
        if self.estimator == "grid":
            return
        if self.adaptive:
            raise ConfigError("the adaptive grid and the sequential estimator (which places its own σ) exclude each other")
        if self.redraw:
            raise ConfigError("fresh noise per σ applies to the grid; the sequential estimator draws per (sample, repeat)")
        if self.spec.kind == "mixed" and self.spec.ratio is None:
            raise ConfigError("the sequential estimator needs a curve that starts clean (σ = 0): mixed noise with a "
                              "σ ratio, not a fixed component")  # fmt: skip
        if not np.any(self.sigmas > 0):
            raise ConfigError("the sequential estimator needs a σ range: the grid has no σ > 0")
        if self.spec.axis.integer:
            raise ConfigError(f"the sequential estimator places trials on a continuous axis; {self.spec.axis.name} are whole "
                              "numbers, each measured once on every sample by the grid (use --estimator grid)")  # fmt: skip


_KIND_NAMES = {bool: "true or false", str: "a text", (str, type(None)): "a text or None", (int, float): "a number",
               (int, float, type(None)): "a number or None"}  # fmt: skip


def _grid_text(levels: Sequence[float] | str | None) -> str | None:
    """A grid as the noise model parses it: text as given, values written exactly (repr)."""
    if levels is None or isinstance(levels, str):
        return levels
    try:
        values = np.asarray(levels, float)
    except (TypeError, ValueError):
        raise ConfigError(f"levels must be a grid text or a list of numbers, got {levels!r}") from None
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ConfigError("levels must be a non-empty list of finite values")
    return ",".join(repr(float(v)) for v in values)
