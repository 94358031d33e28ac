"""A scan report of many points, written without a model: realistic logistic curves with binomial
noise, fitted by ``wn_onnx.results.fit.curve_json`` (docs/report-schema.md). For timing
``wn-onnx report`` on reports far larger than a test model gives (docs/reports.md, "Reports of many points")::

    python benchmarks/synthetic_report.py 300 /tmp/r300.json
    /usr/bin/time -v wn-onnx report /tmp/r300.json --html /tmp/r300.html
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wn_onnx.results.fit import curve_json

OPS = ("Conv", "BatchNormalization", "Relu", "Add", "MatMul")


def synthetic_report(points: int, seed: int = 0, samples: int = 1000, repeats: int = 3) -> dict:
    """``points`` walking curves (μ log-uniform in [0.03, 3]) and a global one, 10 classes."""
    rng = np.random.default_rng(seed)
    sigmas = np.geomspace(1e-2, 1e2, 17)
    chance, clean = 0.1, 0.95

    def curve(mu: float) -> dict:
        p = chance + (clean - chance) / (1 + (sigmas / mu) ** 3)
        acc = rng.binomial(samples, np.repeat(p[:, None], repeats, axis=1)) / samples
        return curve_json(sigmas, acc, np.zeros_like(acc, int), chance, samples, clean)

    pts = [
        {"index": i, "tensor": f"/layer{i}/{OPS[i % len(OPS)]}_output_0", "op_type": OPS[i % len(OPS)],
         "node": f"/layer{i}/{OPS[i % len(OPS)]}", "shape": ["N", 16], **curve(float(10 ** rng.uniform(-1.5, 0.5)))}
        for i in range(points)
    ]  # fmt: skip
    return {
        "schema_version": 1, "model": "synthetic.onnx", "data": {"source": "synthetic", "samples": samples, "label_free": False},
        "noise": {"kind": "add", "order": None}, "mode": "both", "seed": seed, "repeats": repeats,
        "common_random_numbers": True, "output": "logits", "device": "cpu", "providers": ["CPUExecutionProvider"],
        "clean_accuracy": clean, "clean_nonfinite": 0, "num_classes": 10, "chance": chance, "points": pts,
        "global": {"points": list(range(points)), **curve(0.05)},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("points", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.out.write_text(json.dumps(synthetic_report(a.points, a.seed)))


if __name__ == "__main__":
    main()
