"""Figures and a one-file HTML report from scan reports (paper Figs. 1, 2, 3/5).

* :func:`curves_figure` — accuracy vs σ per point with error bars, the fitted logistic, μ marked.
* :func:`mu_figure` — μ per point (x: index and op) with error bars; several reports overlaid.
* :func:`preserved_figure` — relative accuracy preserved at the largest σ, per point.

Points whose status is not ``ok`` are drawn distinctly (hollow markers, arrows for bounds) and
the legend says why. Everything works from Python for notebooks and from ``wn-onnx report``.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from wn_onnx.fit import logistic
from wn_onnx.report_schema import FAILED

STATUS_MARK = {"ok": "o", "not-reached": "^", "no-drop-from-start": "v", "poor-fit": "s", "two-drops": "D"}
STATUS_TEXT = {
    "not-reached": "never fell to the midpoint: μ is a lower bound (▲)",
    "no-drop-from-start": "already at the midpoint at the smallest σ: μ is an upper bound (▼)",
    "poor-fit": "one logistic does not fit: μ is the threshold crossing (□)",
    "two-drops": "plateau then a second drop: two logistics fitted (◇)",
}


def _curves(report: dict) -> list[tuple[str, dict]]:
    items = [(f"{p['index']} {p['op_type']}", p) for p in report.get("points", []) if p["status"] != FAILED]
    if report.get("global"):
        items.append(("global", report["global"]))
    return items


def _log_axis(sigmas: np.ndarray) -> bool:
    positive = sigmas[sigmas > 0]
    return positive.size > 1 and positive.max() / positive.min() > 100


def curves_figure(report: dict, columns: int = 4) -> plt.Figure:
    """Fig. 1 style: one panel per point (and the global curve)."""
    items = _curves(report)
    if not items:
        raise ValueError("the report holds no curves")
    rows = -(-len(items) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.5 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(items) :]:
        ax.axis("off")
    for ax, (label, c) in zip(axes.flat, items, strict=False):
        s = np.asarray(c["sigmas"], float)
        acc = np.asarray(c["accuracy"], float)
        y, err = acc.mean(axis=1), acc.std(axis=1, ddof=1) if acc.shape[1] > 1 else np.zeros(len(s))
        log = _log_axis(s)
        shown = s > 0 if log else np.ones(len(s), bool)
        ok = c["status"] == "ok"
        ax.errorbar(s[shown], y[shown], yerr=err[shown], fmt=STATUS_MARK.get(c["status"], "o"), ms=3,
                    mfc=None if ok else "none", color="C0" if ok else "C3", elinewidth=0.8, label="measured")  # fmt: skip
        fit = c.get("fit") or {}
        if ok and fit.get("slope"):
            fine = np.geomspace(s[shown].min(), s.max(), 400) if log else np.linspace(s.min(), s.max(), 400)
            ax.plot(
                fine,
                logistic(fine, c["mu"], fit["slope"], (c["a_max"] - c["a_min"]) / 2, c["a_min"]),
                color="C1",
                lw=1.2,
                label="fit",
            )
        if c.get("mu") is not None:
            ax.axvline(c["mu"], color="C2", ls="--", lw=1, label="μ")
            if c.get("mu_err"):
                ax.axvspan(max(c["mu"] - c["mu_err"], s[shown].min()), c["mu"] + c["mu_err"], color="C2", alpha=0.15)
        if log:
            ax.set_xscale("log")
        mu_text = "—" if c.get("mu") is None else f"{c['mu']:.3g}"
        ax.set_title(f"{label}: μ={mu_text} [{c['status']}]", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(-0.02, 1.02)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=6, loc="lower left")
    noise = report.get("noise", {})
    fig.suptitle(
        f"accuracy vs σ · {noise.get('kind', '?')} noise {noise.get('order') or ''} · {Path(str(report.get('model', ''))).name}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def align(reports: list[dict]) -> tuple[list[str], list[str]]:
    """Point labels shared by all reports, aligned by tensor name, and warnings for the rest."""
    warnings_out: list[str] = []
    first = [p["tensor"] for p in reports[0].get("points", [])]
    for i, r in enumerate(reports[1:], start=1):
        names = [p["tensor"] for p in r.get("points", [])]
        if names != first:
            missing = len(set(first) ^ set(names))
            warnings_out.append(
                f"report {i + 1} has other points than report 1 ({missing} differ): aligned by tensor name"
            )
    order = [t for t in first if all(t in {p["tensor"] for p in r.get("points", [])} for r in reports)]
    return order, warnings_out


def mu_figure(reports: list[dict], labels: list[str] | None = None) -> plt.Figure:
    """Fig. 2 style: μ per point, one series per report, log μ axis, status-coded markers."""
    order, _ = align(reports)
    if not order:
        raise ValueError("the reports share no walking point")
    labels = labels or [Path(str(r.get("model", f"report {i + 1}"))).stem for i, r in enumerate(reports)]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(order) + 2), 3.8))
    x = np.arange(len(order))
    width = 0.8 / len(reports)
    seen_status = set()
    for j, r in enumerate(reports):
        by_name = {p["tensor"]: p for p in r["points"]}
        for i, t in enumerate(order):
            p = by_name[t]
            if p["mu"] is None:
                continue
            ok = p["status"] == "ok"
            seen_status.add(p["status"])
            ax.errorbar(x[i] + (j - (len(reports) - 1) / 2) * width, p["mu"], yerr=p["mu_err"] or 0, fmt=STATUS_MARK.get(p["status"], "o"),
                        color=f"C{j}", mfc=None if ok else "none", ms=5, capsize=2, label=labels[j] if i == 0 else None)  # fmt: skip
        if r.get("global") and r["global"].get("mu"):
            ax.axhline(r["global"]["mu"], color=f"C{j}", ls=":", lw=1)
    names = {p["tensor"]: f"{p['index']} {p['op_type']}" for p in reports[0]["points"]}
    ax.set_xticks(x, [names[t] for t in order], rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("midpoint noise level μ")
    ax.set_title("μ per point (dotted: global μ)", fontsize=10)
    ax.legend(fontsize=7)
    explained = [STATUS_TEXT[s] for s in sorted(seen_status) if s in STATUS_TEXT]
    if explained:
        fig.text(0.01, 0.01, "\n".join(explained), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.04 * len(explained), 1, 1))
    return fig


def preserved_figure(reports: list[dict], labels: list[str] | None = None) -> plt.Figure:
    """Figs. 3/5 style: accuracy at the largest σ relative to clean accuracy, per point."""
    order, _ = align(reports)
    labels = labels or [Path(str(r.get("model", f"report {i + 1}"))).stem for i, r in enumerate(reports)]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(order) + 2), 3.5))
    x = np.arange(len(order))
    width = 0.8 / len(reports)
    for j, r in enumerate(reports):
        by_name = {p["tensor"]: p for p in r["points"]}
        clean = r.get("clean_accuracy") or 1.0
        values = [np.mean(by_name[t]["accuracy"][-1]) / clean for t in order]
        ax.bar(x + (j - (len(reports) - 1) / 2) * width, values, width, label=labels[j], color=f"C{j}")
        chance = r.get("chance")
        if chance:
            ax.axhline(chance / clean, color=f"C{j}", ls=":", lw=1)
    names = {p["tensor"]: f"{p['index']} {p['op_type']}" for p in reports[0]["points"]}
    ax.set_xticks(x, [names[t] for t in order], rotation=60, ha="right", fontsize=7)
    largest = reports[0]["points"][0]["sigmas"][-1] if reports[0]["points"] else float("nan")
    ax.set_ylabel("accuracy preserved")
    ax.set_title(f"relative accuracy at the largest σ ({largest:.3g}); dotted: chance", fontsize=10)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
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
    """One self-contained HTML file: figures embedded as PNG data URIs, no external assets."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for note in notes:
        body.append(f"<p class='note'>{html.escape(note)}</p>")
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(
            f"<img alt='{html.escape(heading)}' src='{png_data_uri(content)}'>"
            if isinstance(content, plt.Figure)
            else content
        )
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto}img{max-width:100%}.note{color:#a60}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def mu_table_html(reports: list[dict], labels: list[str]) -> str:
    rows = [
        "<table><tr><th>#</th><th>tensor</th><th>op</th>"
        + "".join(f"<th>{html.escape(lb)} μ (status)</th>" for lb in labels)
        + "</tr>"
    ]
    order, _ = align(reports)
    for t in order:
        cells = []
        for r in reports:
            p = next(q for q in r["points"] if q["tensor"] == t)
            mu = "—" if p["mu"] is None else f"{p['mu']:.3g}" + (f" ± {p['mu_err']:.2g}" if p.get("mu_err") else "")
            cells.append(f"<td>{mu} ({p['status']})</td>")
        first = next(q for q in reports[0]["points"] if q["tensor"] == t)
        rows.append(
            f"<tr><td>{first['index']}</td><td>{html.escape(t)}</td><td>{first['op_type']}</td>{''.join(cells)}</tr>"
        )
    return "".join(rows) + "</table>"


def build_report(
    reports: list[dict], labels: list[str] | None = None, html_path: Path | None = None, figure_dir: Path | None = None
) -> tuple[list[Path], list[str]]:
    """Write the figures (PNG + SVG) and/or the HTML page; returns (files written, warnings)."""
    labels = labels or [Path(str(r.get("model", f"report {i + 1}"))).stem for i, r in enumerate(reports)]
    _, notes = align(reports)
    figures: list[tuple[str, str, plt.Figure]] = []  # (title, file stem, figure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if any(r.get("points") for r in reports):
            figures.append(("μ per point", "mu_per_point", mu_figure(reports, labels)))
            figures.append(
                ("accuracy preserved at the largest σ", "preserved_accuracy", preserved_figure(reports, labels))
            )
        for i, (lb, r) in enumerate(zip(labels, reports, strict=True)):
            figures.append((f"accuracy vs σ — {lb}", f"curves_{i + 1}", curves_figure(r)))
    written: list[Path] = []
    if figure_dir is not None:
        for _, stem, fig in figures:
            written += save(fig, Path(figure_dir) / stem)
    if html_path is not None:
        shown = [(title, fig) for title, _, fig in figures]
        sections: list = (
            [("μ table", mu_table_html(reports, labels)), *shown] if any(r.get("points") for r in reports) else shown
        )
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
    """Fig. 4 style: histograms (linear and log |x|) with and without noise, per watched point."""
    hists = result["histograms"]
    fig, axes = plt.subplots(len(hists), 2, figsize=(9, 2.2 * len(hists)), squeeze=False)
    for row, (_name, h) in zip(axes, hists.items(), strict=True):
        for state, color in (("clean", "C0"), ("noisy", "C3")):
            lin = h[state]
            row[0].stairs(
                lin["counts"],
                lin["edges"],
                color=color,
                label=state,
                fill=state == "clean",
                alpha=0.5 if state == "clean" else 1,
            )
            if lin["log_abs"]["counts"]:
                row[1].stairs(lin["log_abs"]["counts"], lin["log_abs"]["edges"], color=color, label=state)
        row[1].set_xscale("log")
        row[0].set_title(f"point {h['index']} {h['op_type']} (linear)", fontsize=8)
        row[1].set_title(f"point {h['index']} {h['op_type']} (|x|, log)", fontsize=8)
        for ax in row:
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    acc = result["accuracy"]
    noise = result["noise"]
    fig.suptitle(
        f"{noise['kind']} noise σ={noise['sigma']:g} at point {result['point']['index']}: accuracy clean {acc['clean']:.1%}, "
        f"noisy {acc['noisy']:.1%}, {result['levels']['count']} levels at point {result['quantized_point']['index']} {acc['quantized']:.1%}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
