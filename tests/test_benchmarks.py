"""The benchmarks' regression guard (benchmarks/bench_scan.py --compare) fires on a worse result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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
