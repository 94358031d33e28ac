"""Deployment-size scans: the memory budget, streamed data, and scans on a Dask cluster."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import config_of, wn
from onnx import TensorProto, helper, numpy_helper

from wn_onnx.engine import SweepSettings
from wn_onnx.engine.memory import Budget, parse_size, peak_live, peak_rss_of
from wn_onnx.errors import WnError
from wn_onnx.io.data import Rows, load_npz, load_streamed
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.scanner import run_scan

UNBOUNDED = 1 << 40


def wide_cnn(path, channels: int = 16, size: int = 224, classes: int = 10) -> None:
    """Conv 3×3 → ReLU → Conv 1×1 → GlobalAveragePool → Gemm: 3 MiB per sample per activation."""
    rng = np.random.default_rng(0)
    shapes = {"w1": (channels, 3, 3, 3), "w2": (channels, channels, 1, 1), "wf": (classes, channels)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32), n)
             for n, s in shapes.items()]  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["logits"], transB=1)]  # fmt: skip
    graph = helper.make_graph(
        nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def peak_rss_mib(args: list[str]) -> tuple[float, dict]:
    """Peak resident MiB of ``wn-onnx scan ARGS --json`` in a process of its own, and its report."""
    peak, done = peak_rss_of([sys.executable, "-m", "wn_onnx", "scan", *args, "--json", "--quiet"])
    assert done.returncode == 0, done.stderr
    return peak / 2**20, json.loads(done.stdout)


def curves(report: dict) -> list:
    return [(p["index"], p["accuracy"], p["nonfinite"], p["mu"]) for p in report["points"]] + [
        report["global"] and (report["global"]["accuracy"], report["global"]["mu"])
    ]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    d = tmp_path_factory.mktemp("wide")
    wide_cnn(d / "wide.onnx")
    rng = np.random.default_rng(1)  # a colour cast per image: the clean predictions differ (label-free needs a drop)
    x = rng.standard_normal((8, 3, 224, 224)) + rng.normal(0, 3, (8, 3, 1, 1))
    np.save(d / "x.npy", x.astype(np.float32))
    return d


def test_peak_memory_stays_under_the_budget_with_the_unbounded_report(wide):
    """At 224² with 16 channels, one activation of 8 samples is 25 MiB: an unbounded scan (all
    8 samples, several σ per stacked run) passes 400 MiB; under --memory 300M the engine runs
    fewer samples and σ values at once, and the report is the same."""
    args = [str(wide / "wide.onnx"), "--data", str(wide / "x.npy"), "--label-free", "--mode", "walking",
            "--at", "0,2", "--sigmas", "log:1e-2:1e2:3", "--repeats", "1"]  # fmt: skip
    small, bounded = peak_rss_mib([*args, "--memory", "300M"])
    large, unbounded = peak_rss_mib([*args, "--memory", "1T"])
    assert small <= 300 < large, (small, large)
    assert curves(bounded) == curves(unbounded)


@pytest.mark.slow
def test_local_workers_share_the_budget_a_remote_worker_has_it_all(monkeypatch):
    """--jobs 2 and a local Dask cluster of 2 workers: the scan process keeps what it holds and each
    worker gets half of the rest (each used to get the whole budget); a worker of a remote cluster
    (here: reached through a scheduler address) has a machine and the whole budget to itself."""
    from distributed import LocalCluster

    import wn_onnx.executors as executors

    sent = []  # the setup each scan sends its workers; its last entry is their memory budget
    setup = executors.worker_setup
    monkeypatch.setattr(executors, "worker_setup", lambda *args: sent.append(setup(*args)) or sent[-1])
    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA, limit=60)
    st = SweepSettings(np.array([0.0, 1.0]), NoiseSpec("add"), 1)
    budget = 8 << 30
    for spread in ({"jobs": 2}, {"workers": 2}):
        run_scan(loaded, data, config_of(st, dict(mode="walking", at="0,1", memory=budget, **spread)))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        run_scan(loaded, data, config_of(st, dict(mode="walking", at="0,1", memory=budget, scheduler=cluster.scheduler_address)))
    pool, local, remote = (Budget.measure(s[-1], loaded.model.graph).total for s in sent)
    assert pool <= budget // 2 and local <= budget // 2 and remote == budget, (pool, local, remote)


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and its descendants now, less multiprocessing's resource
    tracker (a helper of a few MiB the budget leaves out, docs/guide.md "Memory")."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes():
                total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * 4096
            for task in Path(f"/proc/{p}/task").glob("*"):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


@pytest.mark.slow
def test_jobs_stay_within_the_budget_together(wide, tmp_path):
    """scan --jobs 2: the scan process and both workers together stay within --memory (sampled
    every 10 ms: the peak of their sum); each worker alone used to take the whole budget, about
    900 MiB together. A budget too small for the workers' part is refused in one line, with the
    least that would do."""
    x = np.load(wide / "x.npy")
    np.save(tmp_path / "x.npy", np.concatenate([x, x, x]))  # 24 samples: an unbounded worker passes 450 MiB
    args = [sys.executable, "-m", "wn_onnx", "scan", str(wide / "wide.onnx"), "--data", str(tmp_path / "x.npy"),
            "--label-free", "--mode", "walking", "--at", "0,2", "--sigmas", "log:1e-2:1e2:3", "--repeats", "1",
            "--jobs", "2", "--json", "--quiet"]  # fmt: skip
    proc = subprocess.Popen([*args, "--memory", "800M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.01)
    _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    assert peak <= 800 << 20, peak / 2**20
    small = subprocess.run([*args, "--memory", "500M"], capture_output=True, text=True)
    assert small.returncode == 2 and "memory budget of 500M is too small for 2 worker processes" in small.stderr
    assert len(small.stderr.strip().splitlines()) == 1, small.stderr


def test_a_budget_below_what_the_process_holds_is_refused(wide):
    loaded = load_model(wide / "wide.onnx")
    data = load_streamed(wide / "x.npy", require_labels=False)
    st = SweepSettings(np.array([1.0]), NoiseSpec("add"), 1)
    with pytest.raises(WnError, match="memory budget of 2M is too small"):
        run_scan(loaded, data, config_of(st, dict(mode="global", label_free=True, memory=2 << 20)))


def test_sizes_and_liveness():
    assert parse_size("2G") == 2 << 30 and parse_size("512M") == 512 << 20 and parse_size("1.5GB") == 3 << 29
    assert parse_size("800MiB") == 800 << 20
    for bad in ("lots", "2X", "-1G", "100"):
        with pytest.raises(WnError, match="memory size"):
            parse_size(bad)
    # x → a → b, a → c, b + c → out: at most a, b, c alive (x is freed after a, a after c)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["a"], ["c"]), helper.make_node("Add", ["b", "c"], ["out"])]  # fmt: skip
    import onnx_ir as ir

    graph = ir.from_proto(helper.make_model(helper.make_graph(nodes, "g", [x], [out]))).graph
    assert peak_live(graph, {"x": 1, "a": 10, "b": 100, "c": 1000, "out": 1}) == 10 + 100 + 1000


def test_streamed_data_gives_the_in_memory_report(tmp_path):
    """The digits test split as one .npz, as x.npy + y.npy, as a folder of .npz shards: the same
    report (the config hash included) — and the streamed inputs are never read whole."""
    whole = load_npz(DEFAULT_DATA)
    np.save(tmp_path / "x.npy", whole.x)
    np.save(tmp_path / "y.npy", whole.y)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(whole)), 3)):
        np.savez(shards / f"part{i}.npz", x=whole.x[rows], y=whole.y[rows])
    loaded = load_model(DEFAULT_MODEL)
    st = SweepSettings(parse_grid("log:1e-2:1e2:7"), NoiseSpec("add"), 2, 5, batch_size=100)
    req = dict(mode="both", at="1,4,7")
    ref = run_scan(loaded, whole, config_of(st, req))
    for data in (load_streamed(tmp_path / "x.npy", tmp_path / "y.npy"), load_streamed(tmp_path), load_streamed(shards)):
        assert isinstance(data.x, Rows)
        got = run_scan(loaded, data, config_of(st, req))
        assert curves(got) == curves(ref) and got["config_hash"] == ref["config_hash"]
    limited = load_streamed(shards, limit=50)  # a stratified subset, read from the shards
    assert np.array_equal(limited.x[:], load_npz(DEFAULT_DATA, limit=50).x)


def test_streamed_rows_in_any_order_and_sequential_trials_read_each_batch_once(tmp_path, monkeypatch):
    """Rows listed in any order (the sequential estimator's trials), repeated (a fixed batch's
    padding), or contiguous come from a streamed .npy as they are listed; a sequential scan of
    streamed data gives the in-memory report and reads each batch for its kept clean values once,
    not once per trial batch."""
    whole = load_npz(DEFAULT_DATA)
    np.save(tmp_path / "x.npy", whole.x)
    np.save(tmp_path / "y.npy", whole.y)
    data = load_streamed(tmp_path / "x.npy", tmp_path / "y.npy")
    for rows in ([5, 30, 2, 8], [4, 5, 7, 7], [9, 8, 7, 6], [3, 4, 5, 6]):
        assert np.array_equal(data.x[np.array(rows)], whole.x[rows]), rows
    loaded = load_model(DEFAULT_MODEL)
    st = SweepSettings(parse_grid("log:1e-2:1e2:25"), NoiseSpec("add"), 2, 5, batch_size=100)
    req = dict(mode="walking", at="1,4,7", estimator="sequential")
    keys = ("status", "mu", "mu_err", "sequential")
    ref = run_scan(loaded, whole, config_of(st, req))
    read, real = [], Rows._read
    monkeypatch.setattr(Rows, "_read", lambda self, k, local: read.append(len(local)) or real(self, k, local))
    got = run_scan(loaded, data, config_of(st, req))
    assert [[p[k] for k in keys] for p in got["points"]] == [[p[k] for k in keys] for p in ref["points"]]
    trials = sum(p["sequential"]["evaluations"] for p in got["points"])
    # the clean pass, each point's kept batches (three tap groups at most), the trials' own inputs,
    # axis probes of 3 samples: 4,690 rows; reading the batches again for every trial batch: 20,000
    assert sum(read) <= 5 * len(whole) + trials, (sum(read), trials)


def test_streamed_data_errors_are_one_line(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 64), np.float32))
    with pytest.raises(WnError, match="no labels"):
        load_streamed(tmp_path / "x.npy")
    np.save(tmp_path / "bad.npy", np.array([[np.nan] * 64] * 4, np.float32))
    with pytest.raises(WnError, match="4 input samples contain NaN"):
        load_streamed(tmp_path / "bad.npy", require_labels=False)
    (tmp_path / "short.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:-8])
    with pytest.raises(WnError, match="truncated"):
        load_streamed(tmp_path / "short.npy", require_labels=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WnError, match=r"no x\.npy"):
        load_streamed(empty)
    with zipfile.ZipFile(empty / "a.npz", "w") as z:
        z.writestr("y.npy", b"")
    with pytest.raises(WnError, match="no array named 'x'"):
        load_streamed(empty)


@pytest.mark.slow
def test_dask_cluster_scan_equals_the_serial_one():
    """Walking points as Dask tasks and the global sweep cut into σ chunks over two workers (a
    LocalCluster of threads, reached through its scheduler address): the serial report."""
    from distributed import LocalCluster

    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA, limit=120)
    st = SweepSettings(parse_grid("log:1e-2:1e2:9"), NoiseSpec("mul"), 2, 7)
    serial = run_scan(loaded, data, config_of(st, dict(mode="both", at="2-5")))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        spread = run_scan(loaded, data, config_of(st, dict(mode="both", at="2-5", scheduler=cluster.scheduler_address)))
    assert curves(spread) == curves(serial)


def test_commands_take_streamed_data_and_a_memory_budget(tmp_path):
    """check (a folder: its --labels is the opposite of --label-free) and analyze with --memory on
    x.npy + y.npy, scan with --labels; a bad --memory is one line."""
    whole = load_npz(DEFAULT_DATA, limit=90)
    np.save(tmp_path / "x.npy", whole.x)
    np.save(tmp_path / "y.npy", whole.y)
    data = ["--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy"]
    gate = wn("check", DEFAULT_MODEL, "--data", tmp_path, "--at", "3", "--sigmas", "log:1e-2:1e2:5", "--repeats", "1",
              "--min-mu", "0", "--memory", "2G", "--batch-size", "32", "--threads", "1", cwd=tmp_path)  # fmt: skip
    assert gate.returncode == 0, gate.stderr
    mixed = wn("analyze", "mixed", DEFAULT_MODEL, "--data", tmp_path, "--at", "3", "--sigma-mul-grid", "0.1,1",
               "--sigma-add-grid", "0.1,1", "--repeats", "1", "--memory", "2G", "--out", tmp_path / "m.json", cwd=tmp_path)  # fmt: skip
    assert mixed.returncode == 0, mixed.stderr
    assert wn("scan", DEFAULT_MODEL, *data, "--at", "3", "--sigmas", "0.1,1", "--repeats", "1", "--quiet").returncode == 0
    bad = wn("scan", DEFAULT_MODEL, *data, "--memory", "lots", cwd=tmp_path)
    assert bad.returncode == 2 and "memory size 'lots'" in bad.stderr


def test_one_npy_per_input_streams_a_model_with_several_inputs(tmp_path):
    """A folder of top.npy and bot.npy for a two-input model: the report (config hash included) of
    the same arrays given in memory."""
    from deployed import build

    import wn_onnx

    dep = build(tmp_path)["two_inputs"]
    arrays = dep.data(21)
    folder = tmp_path / "stream"
    folder.mkdir()
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values)
    kw = {"label_free": True, "mode": "both", "sigmas": [0, 0.3, 3], "repeats": 2, "batch_size": 8}
    ref, got = (wn_onnx.scan(dep.path, d, **kw).to_json() for d in ((arrays, None), folder))
    assert curves(got) == curves(ref) and got["config_hash"] == ref["config_hash"]
