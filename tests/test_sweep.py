"""Noisy-training sweeps: Dask LocalCluster equals serial, kill -9 and resume, reports feed plan."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wn

from wn_onnx.errors import WnError
from wn_onnx.noise import NoiseSpec
from wn_onnx.results.schema import schema_problems
from wn_onnx.training.sweep import load_sweep, run_sweep, status_counts, sweep_reports

TINY = """
dataset = "digits"
arch = "mlp"
bn = true
noise = "add"
points = [1, 4]
sigmas = [0.5, 2.0]
seeds = [0, 1]
epochs = 1
limit = 400
"""


def rows(db: Path) -> dict:
    with sqlite3.connect(db) as con:
        return {k: (s, json.loads(r) if r else None) for k, s, r in con.execute("SELECT key, status, result FROM runs")}


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("seconds", "host", "history")} | {
        "history": [{k: v for k, v in e.items() if k != "seconds"} for e in result["history"]]
    }


@pytest.mark.slow
def test_local_cluster_equals_serial(tmp_path):
    for name in ("serial", "dask"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.toml").write_text(TINY)
    serial = load_sweep(tmp_path / "serial" / "sweep.toml")
    assert len(serial.runs) == 8
    assert run_sweep(serial, workers=0)["done"] == 8
    dask = load_sweep(tmp_path / "dask" / "sweep.toml")
    assert run_sweep(dask, workers=2)["done"] == 8
    a, b = rows(serial.db_path), rows(dask.db_path)
    assert a.keys() == b.keys() == {r["key"] for r in serial.runs}
    for key in a:
        assert a[key][0] == b[key][0] == "done"
        assert comparable(a[key][1]) == comparable(b[key][1])
    assert {r[1]["host"] for r in b.values()}  # ran on workers


def test_report_has_scan_schema_and_feeds_plan(tmp_path):
    (tmp_path / "sweep.toml").write_text(
        TINY.replace("points = [1, 4]", 'points = [1, 4, "global"]').replace("seeds = [0, 1]", "seeds = [0]")
    )
    sweep = load_sweep(tmp_path / "sweep.toml")
    run_sweep(sweep, workers=0)
    (report,) = sweep_reports(sweep).values()
    assert [p["index"] for p in report["points"]] == [1, 4] and report["global"] is not None
    assert schema_problems(report) == []
    assert all(p["sigmas"] == [0.5, 2.0] for p in report["points"])
    (tmp_path / "r.json").write_text(json.dumps(report))
    res = wn("plan", tmp_path / "r.json", "--json")
    assert res.returncode == 0, res.stderr
    assert sum(json.loads(res.stdout)["executions"]) == 4


@pytest.mark.slow
def test_kill_client_then_resume_runs_each_key_once(tmp_path):
    (tmp_path / "sweep.toml").write_text(
        TINY.replace("epochs = 1", "epochs = 3").replace("seeds = [0, 1]", "seeds = [0, 1, 2]")
    )
    sweep = load_sweep(tmp_path / "sweep.toml")
    cmd = [sys.executable, "-m", "wn_onnx", "sweep", "run", str(tmp_path / "sweep.toml"), "--workers", "0", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if sweep.db_path.exists() and status_counts(sweep)["done"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = status_counts(sweep)
    assert 3 <= before["done"] < 12 and before["running"] <= 1
    done_before = {k for k, (s, _) in rows(sweep.db_path).items() if s == "done"}
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    after = rows(sweep.db_path)
    assert len(after) == 12 and all(s == "done" for s, _ in after.values())
    with sqlite3.connect(sweep.db_path) as con:
        attempts = dict(con.execute("SELECT key, attempts FROM runs"))
    assert all(attempts[k] == 1 for k in attempts), attempts  # nothing ran twice, done rows were skipped
    assert done_before <= set(after)


def test_the_memory_budget_reaches_the_noisy_evaluation(tmp_path, monkeypatch):
    """sweep run --memory: the noisy evaluation's samples per forward pass follow from the budget,
    as a scan's do — 1024 (the most) by default, fewer where the budget leaves little beyond what
    the process holds (the run records them) — and a budget below what the process already holds
    fails the run, saying so. Was: no --memory, every evaluation 1024 samples at a time."""
    one = TINY.replace("points = [1, 4]", "points = [1]").replace("sigmas = [0.5, 2.0]", "sigmas = [2.0]")
    for name in ("refused", "default", "small"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "s.toml").write_text(one.replace("seeds = [0, 1]", "seeds = [0]"))  # one run
    res = wn("sweep", "run", tmp_path / "refused" / "s.toml", "--workers", "0", "--retries", "0", "--memory", "2M", "--quiet")  # fmt: skip
    assert res.returncode == 1, res.stderr
    with sqlite3.connect(tmp_path / "refused" / "s.toml.sqlite") as con:
        [(status, error)] = con.execute("SELECT status, error FROM runs").fetchall()
    assert status == "failed" and "memory budget of 2M is too small" in error, error
    run_sweep(load_sweep(tmp_path / "default" / "s.toml"), workers=0)
    [(_, default)] = rows(tmp_path / "default" / "s.toml.sqlite").values()
    # a process said to hold 4 MiB under a 5M budget: 0.75 MiB for the runs, a few hundred samples
    monkeypatch.setattr("wn_onnx.engine.memory.current_rss", lambda: 4 << 20)
    run_sweep(load_sweep(tmp_path / "small" / "s.toml"), workers=0, memory=5 << 20)
    [(_, small)] = rows(tmp_path / "small" / "s.toml.sqlite").values()
    assert default["eval_batch"] == 1024 and 0 < small["eval_batch"] < 1024, (default["eval_batch"], small["eval_batch"])
    assert small["clean_accuracy"] == default["clean_accuracy"]


def test_bad_sweep_files(tmp_path):
    (tmp_path / "a.toml").write_text("dataset = [")
    with pytest.raises(WnError, match="malformed TOML"):
        load_sweep(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text(TINY + "colour = 1\nspeed = 2\n")
    with pytest.raises(WnError, match="unknown key\\(s\\) colour, speed"):
        load_sweep(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text(TINY)
    started = time.time()
    res = wn("sweep", "run", tmp_path / "c.toml", "--scheduler", "tcp://127.0.0.1:9", "--quiet")  # fmt: skip
    assert res.returncode == 2 and "cannot reach the Dask scheduler" in res.stderr, res.stderr
    assert time.time() - started < 60


def test_run_noise_keeps_a_zero_ratio_and_mixed_settings_off_other_kinds():
    """Was: sigma_ratio = 0 became 0.5, and order/ratio reached add and mul runs (refused only when
    the run executed)."""
    from wn_onnx.training.sweep import run_noise

    run = {"order": "add-first", "sigma_ratio": 0.0}
    assert run_noise(run, "mixed").to_json() == NoiseSpec("mixed", "add-first", 0.0).to_json()
    assert run_noise(run, "add").to_json() == NoiseSpec("add").to_json()
    assert run_noise({}, "mixed").to_json() == NoiseSpec("mixed", "mul-first", 0.5).to_json()
