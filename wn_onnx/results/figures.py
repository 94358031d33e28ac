"""Figures and a one-file HTML report from scan reports (paper Figs. 1, 2, 3/5).

* :func:`curves_figure` — accuracy vs σ per point with error bars, the fitted logistic, μ marked.
* :func:`mu_figure` — μ per point (x: index and op) with error bars; several reports overlaid.
* :func:`preserved_figure` — relative accuracy preserved at the largest σ, per point.

Points whose status is not ``ok`` are drawn distinctly (hollow markers, arrows for bounds) and
the legend says why. Everything works from Python for notebooks and from ``wn-onnx report``; a
report is a :class:`wn_onnx.Report` or its JSON object wherever one is taken.
"""

from __future__ import annotations

import base64
import difflib
import html
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from wn_onnx.results.fit import shaped_curve
from wn_onnx.results.names import level_text, mu_text, point_label, shorten
from wn_onnx.results.schema import FAILED, as_report_dict

if TYPE_CHECKING:
    from wn_onnx.results.report import Report

STATUS_MARK = {"ok": "o", "not-reached": "^", "no-drop-from-start": "v", "poor-fit": "s", "two-drops": "D", "bracketed": "P",
               "failed": "x"}  # fmt: skip
STATUS_TEXT = {
    "ok": "the fitted curve's midpoint, consistent with the data (●)",
    "not-reached": "never fell to the midpoint: μ is a lower bound (▲)",
    "no-drop-from-start": "already at the midpoint at the smallest σ: μ is an upper bound (▼)",
    "poor-fit": "no logistic shape agrees with the data: μ is the threshold crossing (■)",
    "two-drops": "plateau then a second drop: two logistics fitted (◆)",
    "bracketed": "the drop lies between two grid σ: μ is only bracketed (✚)",
    "failed": "the point could not be evaluated (✕)",
}
BELOW_GRID = "μ below the grid's smallest σ: drawn there as an upper bound (▽)"
FONT = 8  # readable when a figure is scaled to a paper column
plt.rcParams.update({"font.size": FONT, "axes.titlesize": FONT, "axes.labelsize": FONT, "legend.fontsize": FONT - 1,
                     "xtick.labelsize": FONT - 1, "ytick.labelsize": FONT - 1})  # fmt: skip


TIME_TICKS = {"1 s": 1.0, "1 min": 60.0, "1 h": 3600.0, "1 d": 86400.0, "1 y": 3.15576e7, "10 y": 3.15576e8}


def axis_name(report: Report | dict) -> str:
    """The swept quantity, with its unit: σ for Gaussian noise (A, σ_add, σ_mul for mixed), else the
    report's axis (bits, bit error rate, time since programming (s), a plug-in's)."""
    report = as_report_dict(report)
    axis = report.get("axis")
    if axis:
        name = "time since programming" if axis.get("name") == "time" else str(axis.get("name", "level"))
        unit = "" if axis.get("more") == "down" or not axis.get("unit") else f" ({axis['unit']})"
        return _text(f"{name}{unit}{' (fewer is worse)' if axis.get('more') == 'down' else ''}")
    noise = report.get("noise", {})
    if noise.get("kind") == "mixed":
        return "A" if noise.get("ratio") is not None else ("σ_add" if noise.get("sigma_mul") is not None else "σ_mul")
    return "σ"


def _axis_ticks(ax: plt.Axes, report: dict, left: float) -> None:
    """Ticks a unit reads naturally in, from ``left`` (the smallest strength drawn; the clean slot
    left of it keeps its own tick): bits at 2^-bits on a falling axis, 1 s … 10 y for time."""
    axis = report.get("axis") or {}
    right = ax.get_xlim()[1]
    if axis.get("more") == "down":
        bits = [b for b in range(0, 65) if left <= 2.0**-b <= right]
        step = max(1, len(bits) // 8)
        ax.set_xticks([2.0**-b for b in bits[::step]], [str(b) for b in bits[::step]])
        ax.minorticks_off()
    elif axis.get("unit") == "s":
        ticks = _spaced({k: v for k, v in TIME_TICKS.items() if left <= v <= right})
        if len(ticks) >= 2:
            ax.set_xticks(list(ticks.values()), list(ticks))
            ax.minorticks_off()


def _spaced(ticks: dict[str, float], ratio: float = 20.0) -> dict[str, float]:
    """Ticks at least ``ratio`` apart on a log axis (1 y and 10 y would print over each other)."""
    kept: dict[str, float] = {}
    for label, value in ticks.items():
        if not kept or value >= ratio * list(kept.values())[-1]:
            kept[label] = value
    return kept


def _text(s: object) -> str:
    """A model's string as literal figure text: a ``$`` in a tensor name must not start mathtext."""
    return str(s).replace("$", r"\$")


MAX_CURVES = 48  # accuracy-vs-σ panels per report by default: a figure of 3,600 panels does not render
DENSE = 60  # per-point figures with more columns than this label every few points only


def _curves(report: dict, limit: int | None = MAX_CURVES) -> tuple[list[tuple[str, dict]], str]:
    """The curves drawn (in point order, the global curve last) and, when not all points are,
    which: the ``limit`` with the lowest μ — the most fragile — then those without a μ."""
    points = [p for p in report.get("points", []) if p["status"] != FAILED]
    note = ""
    if limit and len(points) > limit:
        kept = sorted(points, key=lambda p: (p["mu"] is None, p["mu"] if p["mu"] is not None else 0.0))[:limit]
        note = f"{limit} of {len(points)} points drawn: the {limit} with the lowest μ"
        points = sorted(kept, key=lambda p: p["index"])
    items = [(_text(point_label(p)), p) for p in points]
    if report.get("global"):
        items.append((f"global ({len(report['global'].get('points', []))} points)", report["global"]))
    return items, note


def _log_axis(sigmas: np.ndarray) -> bool:
    positive = sigmas[sigmas > 0]
    return positive.size > 1 and positive.max() / positive.min() > 100


def _mean_err(acc: list) -> tuple[np.ndarray, np.ndarray]:
    """Mean accuracy per σ and the spread over repeats (0 with one repeat); NaN stays NaN."""
    a = np.asarray(acc, float).reshape(len(acc), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = np.nanmean(a, axis=1)
        err = np.nanstd(a, axis=1, ddof=1) if a.shape[1] > 1 else np.zeros(len(a))
    return y, np.nan_to_num(err)


def moving_range(curves: list[dict], margin: int = 2) -> tuple[float, float]:
    """The σ range where the curves change (plus ``margin`` grid steps each side): a sweep to 1e10
    that sits at chance after 1e2 is drawn up to about 1e2, not as a long flat line."""
    lo, hi = np.inf, -np.inf
    for c in curves:
        s = np.asarray(c["sigmas"], float)
        y, _ = _mean_err(c["accuracy"])
        y = np.nan_to_num(y)
        tol = max(0.03, 0.1 * (np.max(y) - np.min(y)))
        steps = np.abs(np.diff(y, prepend=y[0])) > tol  # a step from the previous σ
        between = (np.abs(y - y[0]) > tol) & (np.abs(y - y[-1]) > tol)  # inside a gradual drop
        moving = np.flatnonzero(steps | between)
        first = moving[0] - 1 if moving.size else 0
        last = moving[-1] if moving.size else len(s) - 1
        lo = min(lo, s[max(first - margin, 0)])
        hi = max(hi, s[min(last + margin, len(s) - 1)])
        m = c.get("mu")
        if m is not None and s.min() <= m <= s.max():
            lo, hi = min(lo, m), max(hi, m)
    return float(lo), float(hi)


def _clean_slot(ax: plt.Axes, lo: float, hi: float, label: str = "0") -> tuple[float, float]:
    """On a log σ axis, reserve a slot left of ``lo`` for σ = 0 (the clean model): a tick labelled
    ``label`` and a break mark on the axis saying the scale is interrupted. Returns the slot's x and
    the factor that is one slot-width on this axis."""
    step = (hi / lo) ** 0.09
    x0 = lo / step**2.2
    ax.set_xlim(x0 / step**0.6, hi * step**0.3)
    decades = np.arange(np.ceil(np.log10(lo)), np.floor(np.log10(hi)) + 1)
    every = max(1, int(np.ceil(len(decades) / 5)))
    shown = decades[::every]
    ax.set_xticks([x0, *10.0**shown], [label, *[f"$10^{{{int(d)}}}$" for d in shown]])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    brk = np.sqrt(x0 * lo)
    trans = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for dx in (0.93, 1.07):
        ax.plot([brk * dx / 1.04, brk * dx * 1.04], [-0.03, 0.03], transform=trans, color="k", lw=0.8, clip_on=False,
                gid="axis-break")  # fmt: skip
    return x0, step


def curves_figure(report: Report | dict, columns: int = 3, limit: int | None = MAX_CURVES) -> plt.Figure:
    """Fig. 1 style: accuracy vs σ, one panel per point (and the global curve), clean accuracy as a
    reference line and drawn at σ = 0, the fit, μ with its error band, NaN outputs marked.
    With more than ``limit`` points (None or 0: no limit) only the ``limit`` with the lowest μ get
    a panel, and the title says so."""
    report = as_report_dict(report)
    items, selected = _curves(report, limit)
    if not items:
        raise ValueError("the report holds no curves")
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(max(3.4, 2.4 * columns), 2.0 * rows + 0.7), squeeze=False
    )  # not sharey: every shared axes is a sibling of every other, which costs quadratic time in the panels
    for ax in axes.flat[len(items) :]:
        ax.axis("off")
    clean = report.get("clean_accuracy")
    chance = report.get("chance")
    all_s = np.concatenate([np.asarray(c["sigmas"], float) for _, c in items])
    log = _log_axis(all_s)
    lo, hi = moving_range([c for _, c in items]) if log else (min(0.0, float(all_s.min())), float(all_s.max()))
    if log:
        lo = max(lo, float(all_s[all_s > 0].min()))
    for ax, (label, c) in zip(axes.flat, items, strict=False):
        s = np.asarray(c["sigmas"], float)
        y, err = _mean_err(c["accuracy"])
        shown = (s > 0) if log else np.ones(len(s), bool)
        ok = c["status"] == "ok"
        finite = np.isfinite(y)
        yerr = np.array([np.minimum(err, np.clip(y, 0, 1)), np.minimum(err, 1 - np.clip(y, 0, 1))])
        sel = shown & finite
        ax.errorbar(s[sel], y[sel], yerr=yerr[:, sel], fmt=STATUS_MARK.get(c["status"], "o"), ms=3, mfc=None if ok else "none",
                    color="C0" if ok else "C3", elinewidth=0.8, capsize=1.5, label="measured (mean ± std)", gid="measured")  # fmt: skip
        bad = np.asarray(c.get("nonfinite") or np.zeros((len(s), 1)), float).reshape(len(s), -1).sum(axis=1) > 0
        bad = shown & (bad | ~finite)
        if bad.any():
            ax.plot(s[bad], np.where(finite, y, 0)[bad], "x", color="C3", ms=6, mew=1.4, label="NaN/Inf outputs",
                    gid="nonfinite", zorder=5)  # fmt: skip
        if clean is not None:
            ax.axhline(clean, color="0.4", ls="--", lw=0.8, label="clean accuracy", gid="clean-line")
        if chance:
            ax.axhline(chance, color="0.6", ls=":", lw=0.8, label="chance", gid="chance-line")
        fit = c.get("fit") or {}
        if ok and fit.get("slope"):
            fine = np.geomspace(max(lo, s[shown].min()), hi, 400) if log else np.linspace(lo, hi, 400)
            ax.plot(fine, shaped_curve(fine, c["mu"], fit["slope"], c["a_max"], c["a_min"], fit.get("shape") or "linear"),
                    color="C1", lw=1.2, label="logistic fit", gid="fit")  # fmt: skip
        if log:
            ax.set_xscale("log")
            x0, _ = _clean_slot(ax, lo, hi)
            if clean is not None:
                ax.plot([x0], [clean], "D", color="k", ms=4, label="clean model (axis broken)", gid="clean-point")
        else:
            ax.set_xlim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
            if clean is not None and not (s == 0).any():  # a grid without σ = 0: the clean model still shows
                ax.plot([0.0], [clean], "D", color="k", ms=4, label="clean model", gid="clean-point")
        _mark_mu(ax, c, float(s[shown].min()) if log else None)
        shown = mu_text(report, c)
        ax.set_title(f"{label}\nμ {shown if shown[0] in '<>≤≥' else '= ' + shown} [{c['status']}]")
        ax.set_xlabel(axis_name(report))
        if log:
            _axis_ticks(ax, report, lo)
        ax.set_ylim(-0.03, 1.03)
    _frame(fig, axes, report, columns, selected)
    return fig


def _mark_mu(ax, c: dict, smallest: float | None) -> None:
    """μ as a line and its error as a band, within the panel (``smallest``: the least σ shown on a log axis)."""
    left, right = ax.get_xlim()
    if c.get("mu") is None:
        return
    mu = c["mu"]
    if left < mu < right:
        ax.axvline(mu, color="C2", ls="--", lw=1, label="μ", gid="mu-line")
    e = c.get("mu_err")
    if e:
        band_lo = max(mu - e, smallest if smallest is not None else left, left)
        band_hi = min(mu + e, right)
        if band_hi > band_lo:
            ax.axvspan(band_lo, band_hi, color="C2", alpha=0.15, lw=0, label="μ ± err", gid="mu-band")


def _frame(fig: plt.Figure, axes, report: dict, columns: int, selected: str) -> None:
    """One y label per row, one legend for every panel, the title, and the layout in inches."""
    rows = len(axes)
    for row in axes:
        row[0].set_ylabel("accuracy")
        for ax in row[1:]:
            ax.tick_params(labelleft=False)  # one y scale per row, as shared axes would show it
    handles: dict = {}
    for ax in axes.flat:
        for h, lb in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lb, h)
    ncol = min(4 if columns > 1 else 2, len(handles))
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=ncol, frameon=False)
    noise = report.get("noise", {})
    where = " on weights" if report.get("on") == "weights" else ""
    title = (
        f"accuracy vs {axis_name(report)} · {' '.join(filter(None, (noise.get('kind', '?'), noise.get('order'))))} noise{where}"
        + (" · " if columns > 1 else "\n")
        + _text(Path(str(report.get("model", ""))).name)
        + (f"\n{selected}" if selected else "")
    )
    legend = 0.17 * -(-len(handles) // ncol) + 0.05  # inches under the panels for the legend
    top = 0.17 * (title.count("\n") + 1) + 0.1  # inches above them for the title
    height = 2.0 * rows + 0.2 + legend + top
    fig.set_figheight(height)
    fig.suptitle(title, y=1 - 0.05 / height, va="top")  # placed in inches: tall figures overlapped it
    fig.tight_layout(rect=(0, legend / height, 1, 1 - top / height))


def align(reports: list[Report | dict]) -> tuple[list[list[dict | None]], list[str]]:
    """Columns of points across reports, matched by layer role: the op-type sequences are aligned
    (difflib), so conv1, its BatchNorm, its activation… line up between a BN and a no-BN model
    even though their tensor names differ; points without a partner get their own column.

    Returns the columns (one entry per report, None where a report has no such point) and
    warnings for reports whose points differ from the first one's."""
    reports = [as_report_dict(r) for r in reports]
    columns: list[list[dict | None]] = [[p] for p in reports[0].get("points", [])]
    notes: list[str] = []
    for j, r in enumerate(reports[1:], start=1):
        pts = r.get("points", [])
        role = [next(p for p in col if p is not None)["op_type"] for col in columns]
        merged: list[list[dict | None]] = []
        matcher = difflib.SequenceMatcher(None, role, [p["op_type"] for p in pts], autojunk=False)
        for tag, a0, a1, b0, b1 in matcher.get_opcodes():
            if tag == "equal":
                merged += [[*columns[a], pts[b]] for a, b in zip(range(a0, a1), range(b0, b1), strict=True)]
                continue
            merged += [[*columns[a], None] for a in range(a0, a1)]
            merged += [[*([None] * j), pts[b]] for b in range(b0, b1)]
        if [p["tensor"] for p in pts] != [p["tensor"] for p in reports[0].get("points", [])]:
            alone = sum(col[j] is None or col[0] is None for col in merged)
            notes.append(
                f"report {j + 1} has other points than report 1: aligned by layer role (op-type sequence), "
                f"{alone} points without a partner drawn alone"
            )
        columns = merged
    return columns, notes


def _column_label(col: list[dict | None]) -> str:
    """``index tensor`` when every report names the point alike, else the indices and the shared role."""
    present = [p for p in col if p is not None]
    if len({p["tensor"] for p in present}) == 1:
        return _text(point_label(present[0], 20))
    return "/".join("–" if p is None else str(p["index"]) for p in col) + f" {_text(present[0]['op_type'])}"


def _labels(reports: list[dict], labels: list[str] | None) -> list[str]:
    return [
        _text(lb) for lb in labels or [Path(str(r.get("model", f"report {i + 1}"))).stem for i, r in enumerate(reports)]
    ]


def _lowest_sigma(point: dict) -> float:
    s = np.asarray(point["sigmas"], float)
    return float(s[s > 0].min()) if (s > 0).any() else 1e-12


def _per_point_axes(reports: list[dict], labels: list[str] | None, height: float):
    """What every per-point figure starts from: the aligned columns, the labels, one axes as wide
    as the points need, and the x positions."""
    columns, _ = align(reports)
    if not columns:
        raise ValueError("the reports share no walking point")
    fig, ax = plt.subplots(figsize=(min(max(3.4, 0.32 * len(columns) + 3.0), 0.32 * DENSE + 3.0), height))
    return columns, _labels(reports, labels), fig, ax, np.arange(len(columns))


def _point_ticks(ax: plt.Axes, columns: list[list[dict | None]], x: np.ndarray) -> None:
    """One "index tensor" label per point, or with more than DENSE points (a figure that stays
    readable on a page) the index of every few points: the names are in the μ table."""
    if len(columns) <= DENSE:
        ax.set_xticks(x, [_column_label(col) for col in columns], rotation=60, ha="right", rotation_mode="anchor")
        ax.set_xlabel("noise point (index, tensor)")
        return
    ticks = x[:: -(-len(columns) // 20)]
    ax.set_xticks(ticks, [str(next(p for p in columns[i] if p is not None)["index"]) for i in ticks])
    ax.set_xlabel("noise point (index of the first report; names in the μ table)")


def mu_figure(reports: list[Report | dict], labels: list[str] | None = None) -> plt.Figure:
    """Fig. 2 style: μ per point, x labelled "index tensor", one series per report, log μ axis,
    status-coded markers, error bars kept above zero, μ below the grid clipped and marked as bound."""
    reports = [as_report_dict(r) for r in reports]
    columns, labels, fig, ax, x = _per_point_axes(reports, labels, height=3.2)
    width = 0.6 / len(reports)
    ms, cap = (5, 2) if len(columns) <= DENSE else (2, 0)  # thousands of points: small marks
    seen_status, clipped = set(), False
    floor_all = min(_lowest_sigma(p) for col in columns for p in col if p is not None)
    top_all, bottom = floor_all, np.inf
    for j, r in enumerate(reports):
        dx = (j - (len(reports) - 1) / 2) * width
        xs, mus, lows, highs, marks = [], [], [], [], []
        for i, col in enumerate(columns):
            p = col[j]
            if p is None or p["mu"] is None:
                continue
            floor, mu, e = _lowest_sigma(p), float(p["mu"]), float(p.get("mu_err") or 0)
            if mu < floor:
                clipped = True
                ax.plot(x[i] + dx, floor, "v", color=f"C{j}", mfc="none", ms=6, gid="below-grid")
                continue
            seen_status.add(p["status"])
            xs.append(x[i] + dx), mus.append(mu), marks.append(p["status"])
            lows.append(min(e, mu - max(floor_all / 2, mu - e)) if e else 0.0)
            highs.append(e)
            top_all, bottom = max(top_all, mu + e), min(bottom, mu - lows[-1])
        for status in dict.fromkeys(marks):
            k = [m == status for m in marks]
            sel = np.flatnonzero(k)
            ok = status == "ok"
            ax.errorbar(np.array(xs)[sel], np.array(mus)[sel], yerr=[np.array(lows)[sel], np.array(highs)[sel]],
                        fmt=STATUS_MARK.get(status, "o"), color=f"C{j}", mfc=None if ok else "none", ms=ms, capsize=cap,
                        ls="none", gid=f"mu-{status}")  # fmt: skip
        ax.plot([], [], "o", color=f"C{j}", label=labels[j])
        g = r.get("global") or {}
        if g.get("mu") is not None and g["mu"] >= floor_all:
            ax.axhline(g["mu"], color=f"C{j}", ls=":", lw=1, label=f"global μ ({labels[j]})", gid="global-mu")
            top_all, bottom = max(top_all, g["mu"]), min(bottom, g["mu"])
    _point_ticks(ax, columns, x)
    ax.set_yscale("log")
    ax.set_ylim(floor_all / 2 if clipped or not np.isfinite(bottom) else max(floor_all / 2, bottom / 3), top_all * 3)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    first = reports[0]
    ax.set_ylabel(f"μ (midpoint {axis_name(first).split(' (')[0]})")
    falling = (first.get("axis") or {}).get("more") == "down"
    ax.set_title(f"μ per point (dotted: global μ; {'lower bits at μ' if falling else 'higher'} is more robust)")
    if falling:  # μ is drawn as its strength 2^-bits: label the ticks in bits
        low, high = ax.get_ylim()
        bits = [b for b in range(0, 65) if low <= 2.0**-b <= high]
        ax.set_yticks([2.0**-b for b in bits], [str(b) for b in bits])
        ax.minorticks_off()
    elif (first.get("axis") or {}).get("unit") == "s":
        low, high = ax.get_ylim()
        ticks = {k: v for k, v in TIME_TICKS.items() if low <= v <= high}
        if len(ticks) >= 2:
            ax.set_yticks(list(ticks.values()), list(ticks))
            ax.minorticks_off()
    for status in sorted(seen_status - {"ok"}):
        ax.plot([], [], STATUS_MARK.get(status, "o"), color="0.3", mfc="none", label=status)
    if clipped:
        ax.plot([], [], "v", color="0.3", mfc="none", label="below the grid (bound)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    explained = [STATUS_TEXT[s] for s in sorted(seen_status - {"ok"}) if s in STATUS_TEXT] + (
        [BELOW_GRID] if clipped else []
    )
    if explained:
        fig.text(0.01, 0.01, "\n".join(explained), fontsize=FONT - 2, va="bottom")
    fig.tight_layout(rect=(0, 0.12 * len(explained) / fig.get_figheight(), 1, 1))
    return fig


def preserved_figure(reports: list[Report | dict], labels: list[str] | None = None) -> plt.Figure:
    """Figs. 3/5 style: accuracy at the largest σ relative to clean accuracy, per point, with the
    spread over repeats as error bars (kept inside [0, 1.05])."""
    reports = [as_report_dict(r) for r in reports]
    columns, labels, fig, ax, x = _per_point_axes(reports, labels, height=3.0)
    width = 0.8 / len(reports)
    for j, r in enumerate(reports):
        clean = r.get("clean_accuracy") or 1.0
        idx = [i for i, col in enumerate(columns) if col[j] is not None]
        if not idx:  # a global-only report has no walking point to compare
            continue
        stats = [_mean_err([col[j]["accuracy"][-1]]) for col in columns if col[j] is not None]
        values = np.nan_to_num(np.array([m[0] for m, _ in stats])) / clean
        errs = np.array([e[0] for _, e in stats]) / clean
        yerr = [np.minimum(errs, values), np.minimum(errs, np.maximum(1.05 - values, 0))]
        largest = max(col[j]["sigmas"][-1] for col in columns if col[j] is not None)
        xs, label = x[idx] + (j - (len(reports) - 1) / 2) * width, f"{labels[j]} ({axis_name(r).split(' (')[0]} = {level_text(r, largest)})"
        if len(columns) > DENSE:  # thousands of bars (one patch each) take tens of seconds: lines, one collection
            ax.vlines(xs, 0, values, color=f"C{j}", lw=1, label=label, gid="preserved")
            ax.errorbar(xs, values, yerr=yerr, fmt="none", ecolor="0.3", elinewidth=0.5, gid="preserved-err")
        else:
            ax.bar(xs, values, width, yerr=yerr, capsize=2, label=label, color=f"C{j}",
                   error_kw={"elinewidth": 0.8, "gid": "preserved-err"}, gid="preserved")  # fmt: skip

        if r.get("chance"):
            ax.axhline(r["chance"] / clean, color=f"C{j}", ls=":", lw=1, gid="chance-line")
    ax.axhline(1.0, color="0.4", ls="--", lw=0.8, label="clean accuracy", gid="clean-line")
    _point_ticks(ax, columns, x)
    ax.set_ylabel("accuracy preserved")
    ax.set_title(f"accuracy at the largest {axis_name(reports[0]).split(' (')[0]} / clean accuracy (dotted: chance)")
    ax.set_ylim(0, 1.08)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, stem: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=130)
        paths.append(path)
    return paths


def png_data_uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def html_page(title: str, sections: list[tuple[str, plt.Figure | str]], notes: list[str] = ()) -> str:
    """One self-contained HTML file: figures embedded as PNG data URIs, no external assets.
    ``title``, ``notes`` and headings are escaped here; a string section is trusted markup, built
    by :func:`summary_html` / :func:`mu_table_html`, which escape every string they take from a report."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for note in notes:
        body.append(f"<p class='note'>{e(note)}</p>")
    for heading, content in sections:
        body.append(f"<h2>{e(heading)}</h2>")
        body.append(
            f"<img alt='{e(heading)}' src='{png_data_uri(content)}'>" if isinstance(content, plt.Figure) else content
        )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:auto}img{max-width:100%}.note{color:#a60}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
        "dt{font-weight:bold}.num{text-align:right}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def _num(value: float | None, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def _statuses(reports: list[dict]) -> list[str]:
    seen = [c["status"] for r in reports for c in [*r.get("points", []), *([r["global"]] if r.get("global") else [])]]
    return list(dict.fromkeys(seen))


def summary_html(reports: list[Report | dict], labels: list[str]) -> str:
    """Per report: model, data, noise, clean accuracy, chance, global μ; then what each status means."""
    reports = [as_report_dict(r) for r in reports]
    e = html.escape
    rows = ["<table><tr><th>report</th><th>model</th><th>data</th><th>noise</th><th>clean accuracy</th><th>chance</th>"
            "<th>global μ</th><th>points</th></tr>"]  # fmt: skip
    for lb, r in zip(labels, reports, strict=True):
        data = r.get("data") or {}
        noise = r.get("noise") or {}
        g = r.get("global") or {}
        global_mu = f"{_mu_html(g)} ({e(str(g['status']))})" if g else "— (not measured)"
        rows.append(
            f"<tr><td>{e(lb)}</td><td>{e(str(r.get('model', '?')))}</td>"
            f"<td>{e(str(data.get('source', '?')))}, {e(str(data.get('samples', '?')))} samples"
            f"{' (label-free)' if data.get('label_free') else ''}</td>"
            f"<td>{e(' '.join(str(v) for v in (noise.get('kind'), noise.get('order')) if v))}</td>"
            f"<td class='num'>{_num(r.get('clean_accuracy'), '.2%')}</td>"
            f"<td class='num'>{_num(r.get('chance'), '.2%')}</td>"
            f"<td class='num'>{global_mu}</td><td class='num'>{len(r.get('points', []))}</td></tr>"
        )
    legend = "".join(
        f"<dt>{e(s)}</dt><dd>{e(STATUS_TEXT.get(s, 'see the fit note in the report JSON'))}</dd>"
        for s in _statuses(reports)
    )
    return "".join(rows) + "</table><h3>statuses</h3><dl>" + legend + "</dl>"


def _mu_html(curve: dict) -> str:
    """μ ± err as HTML-safe text, or what the status makes of it (a bound, a threshold value)."""
    mu, err, status = curve.get("mu"), curve.get("mu_err"), curve.get("status")
    if mu is None:
        return "—"
    prefix = {"not-reached": "&gt; ", "no-drop-from-start": "≤ ", "poor-fit": "≈ "}.get(status, "")
    return prefix + f"{mu:.3g}" + (f" ± {err:.2g}" if err and not prefix else "")


def mu_table_html(reports: list[Report | dict], labels: list[str]) -> str:
    """μ per point (aligned as in the figures), the threshold crossing, the status with its meaning."""
    reports = [as_report_dict(r) for r in reports]
    e = html.escape
    head = "".join(f"<th>{e(lb)}: μ</th><th>{e(lb)}: threshold crossing</th><th>{e(lb)}: status</th>" for lb in labels)
    rows = [f"<table><tr><th>#</th><th>tensor</th><th>op</th>{head}</tr>"]
    columns, _ = align(reports)
    for col in columns:
        cells = []
        for p in col:
            if p is None:
                cells.append("<td>—</td>" * 3)
                continue
            status = str(p["status"])
            threshold = (p.get("fit") or {}).get("mu_threshold")
            cells.append(
                f"<td class='num'>{_mu_html(p)}</td><td class='num'>{_num(threshold)}</td>"
                f"<td title='{e(STATUS_TEXT.get(status, status))}'>{e(status)}</td>"
            )
        first = next(p for p in col if p is not None)
        index = "/".join("–" if p is None else e(str(p["index"])) for p in col)
        tensor = " / ".join(dict.fromkeys(e(str(p["tensor"])) for p in col if p is not None))
        rows.append(f"<tr><td>{index}</td><td>{tensor}</td><td>{e(str(first['op_type']))}</td>{''.join(cells)}</tr>")
    return "".join(rows) + "</table>"


def build_report(
    reports: list[Report | dict],
    labels: list[str] | None = None,
    html_path: Path | None = None,
    figure_dir: Path | None = None,
    curves: int | None = MAX_CURVES,
) -> tuple[list[Path], list[str]]:
    """Write the figures (PNG + SVG) and/or the HTML page; returns (files written, warnings).
    ``curves``: accuracy-vs-σ panels per report (the lowest μ first; None or 0: every point)."""
    reports = [as_report_dict(r) for r in reports]
    labels = labels or [Path(str(r.get("model", f"report {i + 1}"))).stem for i, r in enumerate(reports)]
    _, notes = align(reports)
    for lb, r in zip(labels, reports, strict=True):
        selected = _curves(r, curves)[1]
        if selected:
            notes.append(f"{lb}: accuracy vs σ: {selected}; μ of every point is in the μ figure and table (--curves N)")
    figures: list[tuple[str, str, plt.Figure]] = []  # (title, file stem, figure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if any(r.get("points") for r in reports):
            figures.append(("μ per point", "mu_per_point", mu_figure(reports, labels)))
            figures.append(
                ("accuracy preserved at the largest σ", "preserved_accuracy", preserved_figure(reports, labels))
            )
        for i, (lb, r) in enumerate(zip(labels, reports, strict=True)):
            figures.append((f"accuracy vs σ — {lb}", f"curves_{i + 1}", curves_figure(r, limit=curves)))
    written: list[Path] = []
    if figure_dir is not None:
        for _, stem, fig in figures:
            written += save(fig, Path(figure_dir) / stem)
    if html_path is not None:
        sections: list = [("summary", summary_html(reports, labels))]
        if any(r.get("points") for r in reports):
            sections.append(("μ per point", mu_table_html(reports, labels)))
        sections += [(title, fig) for title, _, fig in figures]
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        Path(html_path).write_text(html_page("wn-onnx report", sections, notes))
        written.append(Path(html_path))
    for _, _, fig in figures:
        plt.close(fig)
    return written, notes


def mixed_figure(grids: list[dict]) -> plt.Figure:
    """Fig. 6 style: accuracy over (σ_mul, σ_add) per order, heatmap + contours + measured points."""
    fig, axes = plt.subplots(1, len(grids), figsize=(4.6 * len(grids), 3.9), squeeze=False)
    for ax, g in zip(axes[0], grids, strict=True):
        sm, sa, acc = np.asarray(g["sigma_mul"]), np.asarray(g["sigma_add"]), np.asarray(g["accuracy"])
        mesh = ax.pcolormesh(sa, sm, acc, shading="nearest", vmin=0, vmax=1, cmap="viridis")
        if len(sa) > 1 and len(sm) > 1:
            contours = ax.contour(sa, sm, acc, levels=[0.2, 0.4, 0.6, 0.8], colors="white", linewidths=0.8)
            ax.clabel(contours, fontsize=6)
        xs, ys = np.meshgrid(sa, sm)
        ax.scatter(xs.ravel(), ys.ravel(), s=4, c="k", marker=".")
        if _log_axis(sa):
            ax.set_xscale("log")
        if _log_axis(sm):
            ax.set_yscale("log")
        ax.set_xlabel("σ_add")
        ax.set_ylabel("σ_mul")
        ax.set_title(f"{g['order']} · point {g['point']['index']} {g['point']['op_type']}", fontsize=9)
        fig.colorbar(mesh, ax=ax, label="accuracy")
    fig.tight_layout()
    return fig


def binarize_figure(result: dict) -> plt.Figure:
    """Fig. 4 style, one row per watched point: the clean and the noisy histogram in panels of their
    own (each on its own x range, so the narrow clean one stays visible), and |x| on a log axis for
    both with exact zeros as a bar of their own at the left; on the quantised point the fitted
    levels (solid) and cuts (dashed) are drawn over the noisy histogram."""
    hists = result["histograms"]
    q_index = result["quantized_point"]["index"]
    levels = result["levels"]
    fig, axes = plt.subplots(len(hists), 3, figsize=(7.2, 1.9 * len(hists) + 0.7), squeeze=False)
    for row, (name, h) in zip(axes, hists.items(), strict=True):
        where = _text(f"{h['index']} {shorten(name, 16)}")
        for ax, state, color in ((row[0], "clean", "C0"), (row[1], "noisy", "C3")):
            ax.stairs(
                h[state]["counts"],
                h[state]["edges"],
                color=color,
                fill=True,
                alpha=0.6,
                label=state,
                gid=f"hist-{state}",
            )
            ax.set_title(f"{where} · {state}")
            ax.set_xlabel("activation x")
            ax.set_ylabel("count")
        if h["index"] == q_index:
            ax = row[1]
            two = levels["count"] == 2  # after a ReLU: 0 and the positive peak, one cut
            for i, v in enumerate(sorted(set(levels["values"]))):
                ax.axvline(v, color="C2", lw=1.2, label="levels" if i == 0 else None, gid="level")
            for i, c in enumerate(levels["cuts"][1:] if two else levels["cuts"]):
                ax.axvline(c, color="k", ls="--", lw=1, label="cuts" if i == 0 else None, gid="cut")
            ax.legend(frameon=False, loc="upper right")
        ax = row[2]
        edges = [e for s in ("clean", "noisy") for e in h[s]["log_abs"]["edges"]]
        for state, color in (("clean", "C0"), ("noisy", "C3")):
            if h[state]["log_abs"]["counts"]:
                ax.stairs(h[state]["log_abs"]["counts"], h[state]["log_abs"]["edges"], color=color, lw=1.2, label=state,
                          gid=f"log-{state}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")  # exact zeros after a ReLU outnumber every bin: log counts keep both visible
        lo, hi = (min(edges), max(edges)) if edges else (1e-3, 1.0)
        x0, step = _clean_slot(ax, lo, hi if hi > lo * 10 else lo * 10)
        for state, color, shift in (("clean", "C0", step**-0.25), ("noisy", "C3", step**0.25)):
            if h[state]["zeros"]:
                ax.vlines(x0 * shift, 0.8, h[state]["zeros"], colors=color, lw=4, gid=f"zeros-{state}")
        ax.set_ylim(bottom=0.8)
        ax.set_title(f"{where} · |x|")
        ax.set_xlabel("|x| (0: exact zeros)")
        ax.set_ylabel("count")
    axes[0, 2].legend(frameon=False, loc="best")
    acc = result["accuracy"]
    noise = result["noise"]
    fig.suptitle(
        f"{noise['kind']} noise σ = {noise['sigma']:g} at point {result['point']['index']}: accuracy clean {acc['clean']:.1%}, "
        f"noisy {acc['noisy']:.1%}; {levels['count']} levels at point {q_index}: {acc['quantized']:.1%}"
    )
    fig.tight_layout()
    return fig


def digital_figure(evaluation: dict) -> plt.Figure:
    """Accuracy against the number of digital (noise-free) layers at one time: the layers chosen by
    μ against the first K layers, the chips' spread as error bars, the clean accuracy as the ceiling."""
    rows = evaluation["rows"]
    k = np.array([r["digital"] for r in rows])
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for key, label, mark in (("guided", "least robust layers digital (by μ)", "o-"), ("uniform", "first K layers digital", "s--")):
        ax.errorbar(k, [r[f"{key}_accuracy"] for r in rows], yerr=[r[f"{key}_std"] for r in rows], fmt=mark, ms=4,
                    capsize=2, label=label, gid=f"digital-{key}")  # fmt: skip
    ax.axhline(evaluation["clean_accuracy"], color="0.4", ls=":", lw=0.8, label="clean accuracy")
    ax.set_xticks(k)
    ax.set_xlabel("digital layers K")
    ax.set_ylabel("accuracy")
    ax.set_title(_text(f"accuracy at {evaluation['level_text']} ({evaluation['repeats']} chips)"))
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    return fig
