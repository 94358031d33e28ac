"""``wn-onnx report`` on reports of many points (issue #15, item 26): the accuracy-vs-σ panels are
limited to the points with the lowest μ and the page says so; the per-point figures stay one
figure of bounded size. Timings are in benchmarks/synthetic_report.py, not asserted here."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import wn

from wn_onnx.results.figures import DENSE, build_report, curves_figure, mu_figure, preserved_figure
from wn_onnx.results.fit import curve_json

SIGMAS = np.geomspace(1e-2, 1e2, 13)


def many_points(n: int) -> dict:
    """A report of ``n`` points: a few really fitted curves (wn_onnx.results.fit.curve_json) reused,
    each point with its own μ (its index decides the order: point i has the i-th lowest μ reversed)."""
    rng = np.random.default_rng(0)
    fitted = []
    for mu in (0.1, 0.3, 1.0):
        p = 0.1 + 0.85 / (1 + (SIGMAS / mu) ** 3)
        acc = rng.binomial(500, np.repeat(p[:, None], 2, axis=1)) / 500
        fitted.append(curve_json(SIGMAS, acc, np.zeros_like(acc, int), 0.1, 500, 0.95))
    points = []
    for i in range(n):
        c = copy.deepcopy(fitted[i % 3])
        c["mu"] = 10.0 - i * 9.0 / n  # the last points are the most fragile
        points.append({"index": i, "tensor": f"t{i}", "op_type": "Relu", "node": f"n{i}", "shape": ["N", 4], **c})
    return {"schema_version": 1, "model": "many.onnx", "data": {"source": "x", "samples": 500, "label_free": False},
            "noise": {"kind": "add", "order": None}, "mode": "both", "seed": 0, "repeats": 2,
            "clean_accuracy": 0.95, "chance": 0.1, "num_classes": 10, "points": points,
            "global": {"points": list(range(n)), **copy.deepcopy(fitted[0])}}  # fmt: skip


@pytest.fixture(scope="module")
def big() -> dict:
    return many_points(3 * DENSE)


def panels(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.axison]


def test_curves_limited_to_lowest_mu_and_said(big):
    fig = curves_figure(big, limit=6)
    titles = panels(fig)
    assert len(titles) == 7 and titles[-1].startswith("global")
    n = len(big["points"])
    assert [t.split()[0] for t in titles[:-1]] == [str(i) for i in range(n - 6, n)]  # lowest μ, in point order
    assert f"6 of {n} points drawn: the 6 with the lowest μ" in fig._suptitle.get_text()
    everything = curves_figure(many_points(8), limit=0)
    assert len(panels(everything)) == 9 and "drawn" not in everything._suptitle.get_text()


def test_per_point_figures_stay_one_bounded_figure(big):
    for fig in (mu_figure([big]), preserved_figure([big])):
        (ax,) = fig.axes
        assert fig.get_figwidth() <= 0.32 * DENSE + 3.0 + 1e-9
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert 5 <= len(labels) <= 21 and all(lb.isdigit() for lb in labels)
    few = mu_figure([many_points(5)])
    assert [t.get_text().split()[0] for t in few.axes[0].get_xticklabels()] == ["0", "1", "2", "3", "4"]


def test_html_pages_the_curves_and_names_them(tmp_path, big):
    _, notes = build_report([big], ["big"], tmp_path / "r.html", None, curves=4)
    n = len(big["points"])
    assert notes == [f"big: accuracy vs σ: 4 of {n} points drawn: the 4 with the lowest μ; μ of every point is in "
                     "the μ figure and table (--curves N)"]  # fmt: skip
    page = (tmp_path / "r.html").read_text()
    assert "4 of 180 points drawn" in page and page.count("<tr>") >= n + 1  # every point keeps its table row


def test_cli_report_curves_option(tmp_path, big):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(big))
    ran = wn("report", path, "--html", tmp_path / "r.html", "--curves", "3", columns=200)
    assert ran.returncode == 0, ran.stderr
    assert "3 of 180 points drawn: the 3 with the lowest μ" in ran.stderr
    assert wn("report", path, "--html", tmp_path / "r.html", "--curves", "-1").returncode == 2
