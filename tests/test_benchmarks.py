"""The benchmarks' regression guard (benchmarks/bench_scan.py --compare) fires on a worse result;
gpu_check.py --deploy stops at once without CUDA."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime as ort
import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_scan.py"
RESULTS = Path(__file__).parents[1] / "benchmarks" / "results"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_scan", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_flags_a_doctored_result_and_passes_the_same_one():
    """Each stored result compared with itself passes; with one ratio made 20 % worse (in its own
    direction: a speed-up smaller, a cost ratio larger) it is flagged, and 10 % is not."""
    bench = _bench()
    stored = sorted(RESULTS.glob("bench_scan_*.json"))
    assert stored, "benchmarks/results holds the last measured results"
    for path in stored:
        old = json.loads(path.read_text())
        assert bench.regressions(old, old) == []
        for name, value in old["ratios"].items():
            larger_is_better = bench.RATIOS[name]
            for change, flagged in ((0.2, True), (0.1, False)):
                factor = 1 - change if larger_is_better else 1 + change
                new = {**old, "ratios": {**old["ratios"], name: value * factor}}
                assert bool(bench.regressions(old, new)) == flagged, (path.name, name, change)


def test_gpu_deploy_without_cuda_exits_2_at_once_naming_what_is_missing():
    """Issue #30 item 5: `gpu_check.py --deploy` on a machine without CUDA stops at once (exit 2)
    with one line naming the missing CUDA provider, before any model is built."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime has a CUDA provider here: the deploy run would start")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), "--deploy"], capture_output=True, text=True, env=env, timeout=60)
    seconds = time.perf_counter() - began
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "CUDAExecutionProvider" in lines[0] and "missing" in lines[0]
    assert done.stdout == ""
    assert seconds < 10, f"took {seconds:.1f} s"
