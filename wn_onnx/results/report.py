"""The report model: a scan's report as typed objects (docs/report-schema.md).

The JSON file is the exchange format and stays the source of truth: :meth:`Report.from_json`
checks it with the same schema check every reader uses (:mod:`wn_onnx.results.schema`), and
keys this model does not name (metric details, adaptive bookkeeping, …) ride along in ``extra``
so ``Report.from_json(d).to_json() == d`` for every valid report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def _split(cls: type, data: dict) -> tuple[dict, dict]:
    """(the keys ``cls`` declares, everything else) of ``data``."""
    names = {f.name for f in fields(cls)} - {"extra", "written"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


@dataclass
class Fit:
    """How μ was obtained (docs/method.md): the curve shape, the slope, the threshold crossing and
    the bracket the data allow, and a note when μ is less than a fitted value."""

    slope: float | None = None
    shape: str | None = None
    a_min_free: bool = False
    a_max_err: float | None = None
    a_min_err: float | None = None
    chi2_red: float | None = None
    mu_threshold: float | None = None
    bracket: list[float | None] | None = None
    note: str = ""
    drops: list | None = None
    extra: dict = field(default_factory=dict)
    # the declared keys a JSON object held (a failed point's fit holds only its note); None: all
    written: frozenset[str] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict) -> Fit:
        known, extra = _split(cls, data)
        return cls(**known, extra=extra, written=frozenset(known))

    def to_json(self) -> dict:
        keys = [f.name for f in fields(self) if f.name not in ("extra", "written")]
        return {**{k: getattr(self, k) for k in keys if self.written is None or k in self.written}, **self.extra}


@dataclass
class Curve:
    """Accuracy against σ (rows: σ; columns: repeats) and the fitted midpoint μ with its status."""

    sigmas: list[float]
    accuracy: list[list[float]]
    mu: float | None
    mu_err: float | None
    a_max: float | None
    a_min: float | None
    status: str
    fit: Fit | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> Curve:
        known, extra = _split(cls, data)
        fit = known.pop("fit", None)
        return cls(**known, fit=Fit.from_json(fit) if fit is not None else None, extra=extra)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "fit")}
        if self.fit is not None:
            out["fit"] = self.fit.to_json()
        return {**out, **self.extra}

    @property
    def resolved(self) -> bool:
        """μ is a fitted value with a meaningful error (``ok`` or ``two-drops``)."""
        from wn_onnx.results.fit import RESOLVED

        return self.status in RESOLVED


@dataclass
class PointCurve(Curve):
    """The walking curve of one point: noise after ``tensor`` only."""

    index: int = 0
    tensor: str = ""
    op_type: str = ""
    shape: list | None = None

    def to_json(self) -> dict:
        head = {"index": self.index, "tensor": self.tensor, "op_type": self.op_type, "shape": self.shape}
        return {**head, **super().to_json()}


@dataclass
class GlobalCurve(Curve):
    """Noise after every point in ``points`` at once."""

    points: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"points": self.points, **super().to_json()}


@dataclass
class Report:
    """A whole scan: the model, the noise, the clean accuracy, one curve per point and the global curve.

    ``to_json``/``from_json`` convert losslessly to the JSON a scan writes; ``save``/``load`` go
    through files; ``to_pandas`` gives one row per (curve, σ); ``plot`` draws the curves.
    """

    model: str
    noise: dict
    seed: int
    clean_accuracy: float
    num_classes: int
    points: list[PointCurve]
    global_: GlobalCurve | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> Report:
        """A report from its JSON object; anything that is not a scan report is a :class:`WnError`."""
        problems = schema_problems(data)
        if problems:
            raise WnError(f"not a wn-onnx scan report ({'; '.join(problems[:3])})")
        body = {k: v for k, v in data.items() if k != "global"}
        known, extra = _split(cls, body)
        known["points"] = [PointCurve.from_json(p) for p in data["points"]]
        g = data["global"]
        return cls(**known, global_=GlobalCurve.from_json(g) if g is not None else None, extra=extra)

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "points":
                out["points"] = [p.to_json() for p in self.points]
            elif f.name == "global_":
                out["global"] = self.global_.to_json() if self.global_ is not None else None
            elif f.name != "extra":
                out[f.name] = getattr(self, f.name)
        return {**out, **self.extra}

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

    def to_pandas(self) -> pandas.DataFrame:
        """One row per (curve, σ): mean and spread of the accuracy over repeats, and the curve's fit."""
        try:
            import pandas as pd
        except ImportError:
            raise WnError("Report.to_pandas needs pandas: pip install pandas") from None
        import numpy as np

        rows = []
        for c in self.curves:
            where = {"point": c.index, "tensor": c.tensor, "op_type": c.op_type} if isinstance(c, PointCurve) \
                else {"point": "global", "tensor": None, "op_type": None}  # fmt: skip
            for sigma, acc in zip(c.sigmas, c.accuracy, strict=True):
                a = np.asarray(acc, float)
                rows.append({**where, "sigma": sigma, "accuracy": float(a.mean()),
                             "accuracy_std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "repeats": int(a.size),
                             "mu": c.mu, "mu_err": c.mu_err, "status": c.status})  # fmt: skip
        return pd.DataFrame(rows)

    def plot(self, columns: int = 3) -> plt.Figure:
        """The accuracy curves with their fits, one panel per point (as ``wn-onnx report --png``)."""
        from wn_onnx.results.figures import curves_figure

        return curves_figure(self.to_json(), columns)
