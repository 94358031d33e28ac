"""The clean activations of a walk: one prefix run per batch for a whole group of points, the same
report as one prefix run per point and batch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import config_of, random_data

from wn_onnx.engine import Engine, SweepSettings, core
from wn_onnx.engine.routes import Routes, SharedTaps
from wn_onnx.graph_passes import find_points
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec
from wn_onnx.scanner import run_scan

SAMPLES, BATCH = 70, 32  # 3 batches
RUN_VALUES, TAP_GROUPS = Routes.run_values, Engine.tap_groups


@pytest.fixture(scope="module")
def mlp(zoo):
    path, shape = zoo["mlp_bn"]
    loaded = load_model(path)
    return loaded, random_data(Engine(loaded, ["CPUExecutionProvider"]), shape, SAMPLES)


def settings(spec: NoiseSpec) -> SweepSettings:
    return SweepSettings(np.array([0.0, 0.1, 0.5, 2.0]), spec, repeats=2, batch_size=BATCH)


def scan(loaded, data, monkeypatch, budget: int, spec: NoiseSpec, adaptive: bool = False) -> tuple[dict, list, int]:
    """(report, tap groups, prefix runs) of a walking scan with a TAP_BYTES of ``budget``."""
    monkeypatch.setattr(core, "TAP_BYTES", budget)
    taps, groups = [], []

    def counted(self, x, names):
        taps.append(tuple(names))
        return RUN_VALUES(self, x, names)

    def kept(self, *args):
        groups.extend(TAP_GROUPS(self, *args))
        return groups

    monkeypatch.setattr(Routes, "run_values", counted)
    monkeypatch.setattr(Engine, "tap_groups", kept)
    report = run_scan(loaded, data, config_of(settings(spec), dict(mode="walking", adaptive=adaptive)))
    return report, groups, len(taps)


def test_one_tap_run_per_batch_for_all_points(mlp, monkeypatch):
    loaded, data = mlp
    spec = NoiseSpec("mixed", "add-first", ratio=0.5)  # no affine chains: suffixes start at the points
    shared, groups, runs = scan(loaded, data, monkeypatch, 1 << 30, spec)
    assert len(groups) == 1 and len(groups[0]) == len(shared["points"]) > 10
    assert runs == 3  # one per batch, for all 11 points
    alone, groups, runs = scan(loaded, data, monkeypatch, 0, spec)  # no budget: every point its own runs
    assert len(groups) == len(alone["points"])
    assert runs == 3 * len(alone["points"])
    assert shared["points"] == alone["points"]


def test_budget_splits_the_points_into_groups(mlp, monkeypatch):
    """A budget for about a third of the activations: a few groups, one run per batch each, the
    same curves as one group; with --adaptive the rounds reuse the group's activations too."""
    loaded, data = mlp
    engine, spec = Engine(loaded, ["CPUExecutionProvider"]), NoiseSpec("add")
    names = {n for p in find_points(loaded.model) for n in engine.routes.tap_names(p, spec, False)}
    budget = int(sum(engine.routes.sample_bytes(n, data.x[:BATCH]) for n in names) * SAMPLES / 3)
    whole = run_scan(loaded, data, config_of(settings(spec), dict(mode="walking")))
    grouped, groups, runs = scan(loaded, data, monkeypatch, budget, spec)
    assert 2 <= len(groups) < len(grouped["points"]) and runs == 3 * len(groups)
    assert [p.index for g in groups for p in g] == [p["index"] for p in whole["points"]]  # the walk's order
    assert grouped["points"] == whole["points"]
    _, groups, runs = scan(loaded, data, monkeypatch, budget, spec, adaptive=True)
    assert runs == 3 * len(groups)


def test_global_sweep_needs_no_clean_pass(mlp, monkeypatch):
    """Global noise draws need the shapes of the values only: the axis probe gives them for any
    batch (a whole and a short one here), so a global sweep makes no prefix run over the data."""
    loaded, data = mlp
    engine = Engine(loaded, ["CPUExecutionProvider"])
    names = [p.tensor for p in find_points(loaded.model)]
    for x in (data.x[:BATCH], data.x[-6:]):
        values = engine.run_values(x, names)
        assert engine.routes.shapes(x, names) == {n: (values[n].shape, values[n].dtype) for n in names}
    runs = []
    monkeypatch.setattr(Routes, "run_values", lambda self, x, names: runs.append(names) or RUN_VALUES(self, x, names))
    counts = engine.global_sweep(find_points(loaded.model), data, settings(NoiseSpec("add")), lambda _n: None)
    assert runs == [] and counts.total == SAMPLES and counts.correct[1:].min() < SAMPLES  # the noise is there


def test_kept_values_leave_the_inputs_to_the_caller(mlp):
    """A group keeps its points' clean values for every batch, not the batches' inputs (a copy of
    each batch of streamed 224² images would hold 600 kB a sample for the whole scan); an input
    among the names asked for is the batch the caller hands in."""
    loaded, data = mlp
    engine = Engine(loaded, ["CPUExecutionProvider"])
    points = find_points(loaded.model)
    names = [loaded.input_name, points[1].tensor, points[3].tensor]
    shared = SharedTaps(engine.routes, names)
    x = data.x[:BATCH].copy()
    got = shared.get(0, x, names)
    assert got[loaded.input_name] is x
    assert [set(v) for v in shared.values.values()] == [{points[1].tensor, points[3].tensor}]
    direct = engine.routes.run_values(x, names)
    assert all(np.array_equal(got[n], direct[n]) for n in names[1:])
