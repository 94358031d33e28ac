"""The report model: a scan's report as typed objects (docs/report-schema.md).

The JSON file is the exchange format and stays the source of truth: :meth:`Report.from_json`
checks it with the same schema check every reader uses (:mod:`wn_onnx.results.schema`). Every
documented key is an attribute of the class it belongs to; keys this model does not name (a
newer writer's) ride along in ``extra``, and ``written`` remembers which keys a JSON object held
and in what order, so ``Report.from_json(d).to_json() == d`` for every valid report, key order
included, and an optional key a report lacks never appears on the way out.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from wn_onnx.errors import WnError
from wn_onnx.results.schema import read_report, schema_problems

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    import pandas


def clean_nonfinite(report: dict) -> str:
    """The line that says how many samples had NaN/Inf outputs without noise ('' when none): they
    score 0 at every σ, so a_max and every accuracy are lowered by their share."""
    bad = int(report.get("clean_nonfinite") or 0)
    if not bad:
        return ""
    return (f"{bad} of {report['data']['samples']} samples have NaN/Inf outputs without noise: "
            "they score 0 at every σ")  # fmt: skip


_OWN = ("extra", "written")  # the bookkeeping fields every view has; never JSON keys


@dataclass(kw_only=True)
class _View:
    """A typed view of one JSON object. Subclasses are keyword-only dataclasses whose fields are
    the documented keys. A key is written when it differs from its default (the value a reader
    assumes when the key is absent), and otherwise when the JSON object read held it
    (``written``), or, for a view built in code, when the field has no default or is named in
    ``_ALWAYS``."""

    _KEY: ClassVar[dict[str, str]] = {}  # field → JSON key where they differ (global_ → "global")
    _NESTED: ClassVar[dict[str, str]] = {}  # field → the view class (by name) its JSON object or list items become
    _ALWAYS: ClassVar[tuple[str, ...]] = ()  # fields with a default that are written even at it
    _HEAD: ClassVar[tuple[str, ...]] = ()  # fields written first when there is no ``written`` order

    extra: dict = field(default_factory=dict)  # keys this model does not name
    written: tuple[str, ...] | None = field(default=None, repr=False, compare=False)  # a read object's keys, in order

    @classmethod
    def _keys(cls) -> list[_Key]:
        """The declared keys, the head first, then in declaration order (computed once per class)."""
        cached = cls.__dict__.get("_keys_cache")
        if cached is None:
            own = sorted((f for f in fields(cls) if f.name not in _OWN), key=lambda f: f.name not in cls._HEAD)
            cached = [_Key.of(cls, f) for f in own]
            cls._keys_cache = cached
        return cached

    @classmethod
    def from_json(cls, data: dict) -> Any:
        if not isinstance(data, dict):
            raise WnError(f"a report's {cls.__name__} must be a JSON object, not {type(data).__name__}")
        known: dict[str, Any] = {}
        for k in cls._keys():
            if k.key in data:
                known[k.name] = _decode(k.nested, data[k.key])
            elif k.required:
                raise WnError(f"not a wn-onnx scan report: a {cls.__name__} lacks {k.key!r}")
        names = {k.key for k in cls._keys()}
        extra = {key: v for key, v in data.items() if key not in names}
        return cls(**known, extra=extra, written=tuple(data))

    def to_json(self) -> dict:
        """The JSON object: the keys a read object held, in its order, then any set since."""
        held = () if self.written is None else self.written
        values: dict[str, Any] = {}
        for k in self._keys():
            value = getattr(self, k.name)
            if (k.key in held if self.written is not None else k.always) or value != k.absent():
                values[k.key] = _encode(value)
        out = {}
        for key in dict.fromkeys([*held, *values, *self.extra]):
            if key in values:
                out[key] = values[key]
            elif key in self.extra:
                out[key] = self.extra[key]
        return out


@dataclass(frozen=True)
class _Key:
    """One declared key of a view: its field, its JSON name, the view its value becomes, whether a
    JSON object must hold it and whether it is always written, and its default (the value a reader
    assumes when the key is absent)."""

    name: str
    key: str
    nested: str | None
    required: bool
    always: bool
    default: Any
    factory: Any

    @classmethod
    def of(cls, view: type[_View], f: Field) -> _Key:
        required = f.default is MISSING and f.default_factory is MISSING
        return cls(f.name, view._KEY.get(f.name, f.name), view._NESTED.get(f.name), required,
                   required or f.name in view._ALWAYS, f.default, f.default_factory)  # fmt: skip

    def absent(self) -> Any:
        return self.factory() if self.factory is not MISSING else self.default


def _decode(kind: str | None, value: Any) -> Any:
    if kind is None or value is None:
        return value
    view = _VIEWS[kind]
    return [view.from_json(v) for v in value] if isinstance(value, list) else view.from_json(value)


def _encode(value: Any) -> Any:
    if isinstance(value, _View):
        return value.to_json()
    if isinstance(value, list) and value and isinstance(value[0], _View):
        return [v.to_json() for v in value]
    return value


@dataclass(kw_only=True)
class Fit(_View):
    """How μ was obtained (docs/method.md): the curve shape, the slope, the threshold crossing and
    the bracket the data allow, and a note when μ is less than a fitted value. A failed point's fit
    holds only its note."""

    slope: float | None = None
    shape: str | None = None
    a_min_free: bool = False
    a_max_err: float | None = None
    a_min_err: float | None = None
    chi2_red: float | None = None
    mu_threshold: float | None = None
    bracket: list[float | None] | None = None  # the σ interval of an unresolved μ ([σ_max, None]: not reached)
    note: str = ""
    drops: list | None = None


@dataclass(kw_only=True)
class Adaptive(_View):
    """``--adaptive``'s bookkeeping: σ evaluated of the grid's, the tolerance, whether it was reached."""

    evaluations: int | None = None
    grid: int | None = None
    tolerance: float | None = None
    converged: bool | None = None


@dataclass(kw_only=True)
class Sequential(_View):
    """The sequential estimator's bookkeeping (docs/method.md, "Sequential estimator"): sample
    evaluations used and what the full grid evaluates, and the trials and correct scores per σ."""

    evaluations: int | None = None
    grid_evaluations: int | None = None
    fraction: float | None = None
    tolerance: float | None = None
    converged: bool | None = None
    trials: list[int] | None = None
    correct: list[float] | None = None


@dataclass(kw_only=True)
class Curve(_View):
    """Accuracy against σ (rows: σ; columns: repeats) and the fitted midpoint μ with its status.

    ``sigmas`` are always the fit's strengths; on a falling axis (bits) ``levels`` holds each row's
    level and ``mu_level``/``mu_level_err``/``fewest_bits`` μ in it."""

    _NESTED: ClassVar[dict[str, str]] = {"fit": "Fit", "adaptive": "Adaptive", "sequential": "Sequential"}

    sigmas: list[float]
    accuracy: list[list[float]]
    nonfinite: list[list[int]] | None = None  # predictions with NaN/Inf outputs, per (σ, repeat)
    mu: float | None
    mu_err: float | None
    a_max: float | None
    a_min: float | None
    status: str
    fit: Fit | None = None
    score_variance: list[float] | None = None  # one sample's score variance per σ (fractional scores)
    sigma_add: list[float] | None = None  # mixed noise: the components of each σ
    sigma_mul: list[float] | None = None
    levels: list[float] | None = None
    mu_level: float | None = None
    mu_level_err: float | None = None
    fewest_bits: int | None = None
    adaptive: Adaptive | None = None
    sequential: Sequential | None = None

    @property
    def resolved(self) -> bool:
        """μ is a fitted value with a meaningful error (``ok`` or ``two-drops``)."""
        from wn_onnx.results.fit import RESOLVED

        return self.status in RESOLVED

    @property
    def level_values(self) -> list[float]:
        """Each row's level as the axis reads it: ``levels`` on a falling axis, else σ."""
        return self.levels if self.levels is not None else self.sigmas


@dataclass(kw_only=True)
class PointCurve(Curve):
    """The walking curve of one point: noise after ``tensor`` only. ``node`` produces the tensor
    (empty for a graph input); ``ops`` lists a layer point's ops, ``path`` places a point inside
    control flow; a ``failed`` point has no σ and a one-line ``reason``."""

    _HEAD: ClassVar[tuple[str, ...]] = ("index", "tensor", "op_type", "node", "shape", "ops", "path")

    index: int
    tensor: str
    op_type: str
    node: str = ""
    shape: list | None
    ops: list[str] = field(default_factory=list)
    path: str = ""
    activation_std: float | None = None  # sigma_scale "std": the σ unit of this point
    mixes_samples: bool = False  # the downstream graph mixes a batch's samples
    reason: str | None = None


@dataclass(kw_only=True)
class GlobalCurve(Curve):
    """Noise after every point in ``points`` at once."""

    _HEAD: ClassVar[tuple[str, ...]] = ("points",)
    _ALWAYS: ClassVar[tuple[str, ...]] = ("points",)

    points: list[int] = field(default_factory=list)
    activation_std: list[float] | None = None  # sigma_scale "std": one per point


GLOBAL = -1  # the global curve's ``point`` in Report.to_pandas


@dataclass(kw_only=True)
class Report(_View):
    """A whole scan: the model, the noise, the clean accuracy, one curve per point and the global curve.

    ``to_json``/``from_json`` convert losslessly to the JSON a scan writes; ``save``/``load`` go
    through files; ``to_pandas`` gives a typed table (docs/report-schema.md, "As a table");
    ``plot`` draws the curves. An optional key a report lacks reads as its documented default
    (``metric`` top1, ``estimator`` grid, ``on`` activations …) or None."""

    _KEY: ClassVar[dict[str, str]] = {"global_": "global"}
    _NESTED: ClassVar[dict[str, str]] = {"points": "PointCurve", "global_": "GlobalCurve"}

    schema_version: int
    wn_onnx_version: str | None = None
    model: str
    model_digest: str | None = None
    data: dict | None = None  # source, samples, label_free, feeds
    noise: dict
    on: str = "activations"
    axis: dict | None = None  # name, unit, scale, more ("down": fewer is worse)
    deterministic: bool = False
    converters: dict | None = None
    mode: str | None = None
    seed: int
    repeats: int | None = None
    common_random_numbers: bool | None = None
    output: str | None = None
    device: str | None = None
    providers: list[str] | None = None
    metric: str = "top1"
    clean_accuracy: float
    clean_nonfinite: int = 0
    num_classes: int
    chance: float | None = None
    granularity: str = "layer"
    sigma_scale: str = "absolute"
    estimator: str = "grid"
    points: list[PointCurve]
    global_: GlobalCurve | None
    skipped: list[dict] = field(default_factory=list)
    not_run: list[dict] = field(default_factory=list)
    config_hash: str | None = None
    partial: bool = False
    seconds: float | None = None  # a wall time, when a report from elsewhere holds one; wn-onnx writes none

    @classmethod
    def from_json(cls, data: dict) -> Report:
        """A report from its JSON object; anything that is not a scan report is a :class:`WnError`."""
        problems = schema_problems(data)
        if problems:
            raise WnError(f"not a wn-onnx scan report ({'; '.join(problems[:3])})")
        return super().from_json(data)

    @classmethod
    def load(cls, path: str | Path) -> Report:
        return cls.from_json(read_report(path))

    def save(self, path: str | Path) -> Path:
        """Write the JSON report atomically (a reader never sees half a file)."""
        from wn_onnx.io.safeio import write_text

        p = Path(path)
        write_text(p, json.dumps(self.to_json(), indent=2) + "\n")
        return p

    @property
    def curves(self) -> list[Curve]:
        """Every curve: the points in order, then the global one."""
        return [*self.points, *([self.global_] if self.global_ is not None else [])]

    def to_pandas(self, long: bool = True) -> pandas.DataFrame:
        """The report as a table (docs/report-schema.md, "As a table"). ``long``: one row per
        (curve, level, repeat); else one row per curve. ``point`` is the point's index, the global
        curve's is -1 (``kind`` "global")."""
        try:
            import pandas as pd
        except ImportError:
            raise WnError("Report.to_pandas needs pandas: pip install pandas") from None
        rows = []
        for c in self.curves:
            where = _where(c)
            if not long:
                fit = c.fit or Fit()
                rows.append({**where, "status": c.status, "mu": c.mu, "mu_err": c.mu_err, "mu_level": c.mu_level,
                             "mu_level_err": c.mu_level_err, "a_max": c.a_max, "a_min": c.a_min,
                             "mu_threshold": fit.mu_threshold, "shape": fit.shape, "slope": fit.slope,
                             "n_levels": len(c.sigmas), "note": fit.note})  # fmt: skip
                continue
            for sigma, level, row in zip(c.sigmas, c.level_values, c.accuracy, strict=True):
                rows += [{**where, "sigma": sigma, "level": level, "repeat": r, "accuracy": a, "mu": c.mu,
                          "mu_err": c.mu_err, "status": c.status} for r, a in enumerate(row)]  # fmt: skip
        types = _LONG if long else _WIDE
        frame = pd.DataFrame(rows, columns=list(types))
        return frame.astype(types)

    def plot(self, columns: int = 3) -> plt.Figure:
        """The accuracy curves with their fits, one panel per point (as ``wn-onnx report --png``)."""
        from wn_onnx.results.figures import curves_figure

        return curves_figure(self.to_json(), columns)


def _where(c: Curve) -> dict:
    """The columns that say which curve a row is."""
    if isinstance(c, PointCurve):
        return {"point": c.index, "kind": "point", "tensor": c.tensor, "op_type": c.op_type, "node": c.node}
    return {"point": GLOBAL, "kind": "global", "tensor": "", "op_type": "", "node": ""}


_WHERE = {"point": "int64", "kind": "object", "tensor": "object", "op_type": "object", "node": "object"}
_LONG = {**_WHERE, "sigma": "float64", "level": "float64", "repeat": "int64", "accuracy": "float64",
         "mu": "float64", "mu_err": "float64", "status": "object"}  # fmt: skip
_WIDE = {**_WHERE, "status": "object", "mu": "float64", "mu_err": "float64", "mu_level": "float64",
         "mu_level_err": "float64", "a_max": "float64", "a_min": "float64", "mu_threshold": "float64",
         "shape": "object", "slope": "float64", "n_levels": "int64", "note": "object"}  # fmt: skip
_VIEWS: dict[str, type[_View]] = {v.__name__: v for v in (Fit, Adaptive, Sequential, PointCurve, GlobalCurve)}
