"""Walk noise is one stream that every point reads (engine.draws): a point's curve is the same
whatever other points are walked with it and whatever the memory budget, which decides the
samples per run and whether the noise drawn for one point is kept for the others or drawn again."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import config_of, random_data

from wn_onnx.engine import Engine, SweepSettings, draws, memory
from wn_onnx.engine.routes import Routes
from wn_onnx.graph_passes import find_points
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec
from wn_onnx.scanner import run_scan

SAMPLES, BATCH, REPEATS = 40, 16, 2  # 3 batches
HELD = 1 << 20  # the process's resident bytes as the budget sees them (a tight budget must not depend on pytest's)
ROWS = draws.walk_rows


@pytest.fixture(scope="module")
def lenet(zoo):
    """LeNet-5+BN: points of 3,072, 4,704, 1,176, 1,600, 400, 120, 84 and 10 numbers per sample."""
    path, shape = zoo["lenet5_bn"]
    loaded = load_model(path)
    return loaded, random_data(Engine(loaded, ["CPUExecutionProvider"]), shape, SAMPLES)


def walked(lenet, monkeypatch, spec: NoiseSpec, **request) -> tuple[dict, list[int]]:
    """({point index: its measurements}, the samples of every walk-stream draw) of a walking scan."""
    loaded, data = lenet
    drawn = []

    def counted(seed, key, samples, width):
        drawn.append(len(samples))
        return ROWS(seed, key, samples, width)

    monkeypatch.setattr(draws, "walk_rows", counted)
    monkeypatch.setattr("wn_onnx.engine.memory.current_rss", lambda: HELD)
    st = SweepSettings(np.array([0.0, 0.3, 1.0, 3.0]), spec, repeats=REPEATS, batch_size=BATCH)
    report = run_scan(loaded, data, config_of(st, dict(mode="walking", **request)))
    return {p["index"]: (p["sigmas"], p["accuracy"], p["nonfinite"]) for p in report["points"]}, drawn


@pytest.mark.parametrize("spec", [NoiseSpec("add"), NoiseSpec("mixed", "add-first", ratio=0.5)])
def test_a_points_curve_does_not_depend_on_the_points_walked_with_it_or_the_budget(lenet, monkeypatch, spec):
    """Every point walked: one draw per (repeat, batch) serves them all. Each of points of four
    sizes walked alone, and pairs of them, get the curve they get with all the others. A budget
    that keeps one batch's noise (the rest drawn again for each point), and one that keeps none
    and runs fewer samples at a time, give every curve unchanged."""
    loaded, _ = lenet
    points = find_points(loaded.model)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    sizes = {p.index: engine.routes.sample_numbers(p.tensor, lenet[1].x[:3]) for p in points}
    everything, drawn = walked(lenet, monkeypatch, spec)
    assert len(everything) == len(points) and sorted(drawn) == sorted([BATCH, BATCH, SAMPLES - 2 * BATCH] * REPEATS)
    picked = [max(sizes, key=sizes.get), *(k for k in sizes if sizes[k] in (1600, 120)), min(sizes, key=sizes.get)]
    assert len({sizes[k] for k in picked}) == 4
    for at in [[k] for k in picked] + [picked[1::2], picked[:2]]:
        alone, _ = walked(lenet, monkeypatch, spec, at=",".join(map(str, at)))
        assert sorted(alone) == sorted(at) and all(alone[k] == everything[k] for k in at), at
    one_batch = BATCH * max(sizes.values()) * spec.draws * 4  # bytes of one batch's kept noise
    fixed = HELD + memory.SESSION_COPIES * memory.weight_bytes(loaded.model.graph)
    for room, fewer in ((one_batch * 3 // 2, False), (one_batch // 4, True)):  # draws keep a quarter of the caches' quarter
        bounded, drawn = walked(lenet, monkeypatch, spec, memory=fixed + 16 * room)
        assert bounded == everything
        assert REPEATS * 3 < len(drawn) and (min(drawn) < SAMPLES - 2 * BATCH) == fewer, drawn


def test_sequential_trials_read_kept_values_and_draws_and_get_what_they_get_alone(lenet, monkeypatch):
    """The sequential estimator takes every point's trials in an order of its own. Walked with
    the others, a trial's clean values come from the group's prefix run over whole batches and
    its noise from rows kept per sample (each (repeat, sample) drawn once for all points); walked
    alone, the point keeps its own; under a budget that keeps nothing, they are computed for each
    trial batch. The curves are the same."""
    loaded, _ = lenet
    runs: list[int] = []
    real = Routes.run_values

    def counted(self, x, names):
        runs.append(len(x))
        return real(self, x, names)

    monkeypatch.setattr(Routes, "run_values", counted)
    st = SweepSettings(np.geomspace(0.01, 100, 25), NoiseSpec("add"), repeats=REPEATS, batch_size=BATCH)

    def sequential(**request) -> tuple[dict, list[int], list[int]]:
        runs.clear()
        drawn: list[int] = []

        def rows(seed, key, samples, width):
            drawn.extend((key[0], int(s)) for s in samples)
            return ROWS(seed, key, samples, width)

        monkeypatch.setattr(draws, "walk_rows", rows)
        monkeypatch.setattr("wn_onnx.engine.memory.current_rss", lambda: HELD)
        report = run_scan(loaded, lenet[1], config_of(st, dict(mode="walking", estimator="sequential", **request)))
        keys = ("status", "mu", "mu_err", "sequential")
        return {p["index"]: [p[k] for k in keys] for p in report["points"]}, list(runs), drawn

    everything, prefix, drawn = sequential()
    assert len(everything) == len(find_points(loaded.model))
    assert sum(e[3]["evaluations"] for e in everything.values()) > 3 * SAMPLES  # several points share samples
    assert len(drawn) == len(set(drawn)) <= SAMPLES * REPEATS  # each (repeat, sample) drawn once
    assert set(prefix) <= {BATCH, SAMPLES - 2 * BATCH}  # whole batches, not trial batches
    for at in (1, 4, 7):  # a point alone keeps its own values: its trials revisit samples under another repeat
        alone, prefix, _ = sequential(at=str(at))
        assert alone[at] == everything[at] and set(prefix) <= {BATCH, SAMPLES - 2 * BATCH}, at
    fixed = HELD + memory.SESSION_COPIES * memory.weight_bytes(loaded.model.graph)
    bounded, prefix, drawn = sequential(memory=int(fixed * 1.3))
    assert bounded == everything and len(drawn) > len(set(drawn))
    assert set(prefix) - {BATCH, SAMPLES - 2 * BATCH}  # trial batches
