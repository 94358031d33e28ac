"""Scaling benchmarks (issue #17), not part of the test run. Part ``sequential``: the sequential
estimator (``--estimator sequential``, docs/method.md) against the full grid on the same model,
data, noise and seed.

Per curve (walked points and the global curve): μ ± err of both, whether they agree within the
combined error (|Δμ| ≤ k·√(err_grid² + err_seq²), printed for k = 1 and k = 2, the 95 % level
that ``check`` uses against a baseline), the sequential estimator's sample evaluations as a
fraction of the full grid's (every σ > 0 × repeats × samples; target ≤ 5 %), and the wall-time
ratio of the two scans in this process (ratios, not absolute times, are the claims). Targets:
agreement at ≥ 90 % of the curves, ≤ 5 % of the evaluations.

    python benchmarks/bench_scale.py sequential                           # embedded digits MLP, 11 points + global
    python benchmarks/bench_scale.py sequential --noise mul --tolerance 0.05
    python benchmarks/bench_scale.py sequential --arch lenet5 --n 2000 --train-epochs 1 --at 0-15
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from wn_onnx.engine import SweepSettings
from wn_onnx.io.data import Dataset, load_npz
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, default_grid
from wn_onnx.scanner import ScanRequest, run_scan


def model_and_data(args: argparse.Namespace, work: Path) -> tuple[Path, Dataset]:
    """The embedded digits model and its test split, or a LeNet-5/MLP on bench_scan's images."""
    if args.arch == "digits":
        return DEFAULT_MODEL, load_npz(DEFAULT_DATA, args.n)
    import torch
    from bench_scan import images  # the same images as the walking-scan benchmark

    from wn_onnx.training.export import export_onnx
    from wn_onnx.training.nets import build
    from wn_onnx.training.trainer import TrainConfig, train

    x, y = images(args.n)
    if args.train_epochs:
        cfg = TrainConfig(args.arch, "fashion-mnist-32x32x3", epochs=args.train_epochs, augment=False)
        net = train(cfg, (x, y), (x[:1000], y[:1000]), 10, (3, 32, 32))[0].cpu()
    else:
        torch.manual_seed(0)
        net = build(args.arch, (3, 32, 32), 10, bn=True).eval()
    return export_onnx(net, (3, 32, 32), work / f"{args.arch}.onnx"), Dataset(x, y, "bench_scan images")


def sequential_part(args: argparse.Namespace, work: Path) -> None:
    path, data = model_and_data(args, work)
    loaded = load_model(path)
    spec = NoiseSpec(args.noise)
    st = SweepSettings(default_grid(spec), spec, args.repeats, args.seed, args.batch_size)
    reports, seconds = {}, {}
    for estimator in ("grid", "sequential"):
        req = ScanRequest(mode="both", at=args.at, threads=args.threads, tolerance=args.tolerance, estimator=estimator)
        start = time.perf_counter()
        reports[estimator] = run_scan(loaded, data, st, req)
        seconds[estimator] = time.perf_counter() - start
    grid, seq = reports["grid"], reports["sequential"]
    print(f"# {path.name}, {len(data)} samples, {args.noise} noise, {len(st.sigmas)} σ × {args.repeats} repeats, "
          f"seed {args.seed}, tolerance {args.tolerance}")  # fmt: skip
    print("| curve | grid μ ± err (status) | sequential μ ± err (status) | |Δμ|/combined | evaluations | fraction |")
    print("|---|---|---|---|---|---|")
    ratios, fractions, used, full = [], [], 0, 0
    for a, b in zip([*grid["points"], grid["global"]], [*seq["points"], seq["global"]], strict=True):
        name = a.get("index", "global")
        s = b["sequential"]
        used, full = used + s["evaluations"], full + s["grid_evaluations"]
        fractions.append(s["fraction"])
        both_ok = a["status"] == b["status"] == "ok"
        ratio = abs(a["mu"] - b["mu"]) / np.hypot(a["mu_err"], b["mu_err"]) if both_ok else None
        ratios.append(ratio)
        shown = "–" if ratio is None else f"{ratio:.2f}"
        print(f"| {name} | {a['mu']:.4g} ± {a['mu_err'] or 0:.2g} ({a['status']}) | {b['mu']:.4g} ± {b['mu_err'] or 0:.2g} "
              f"({b['status']}) | {shown} | {s['evaluations']} | {s['fraction']:.2%} |")  # fmt: skip
    scored = [r for r in ratios if r is not None]
    for k in (1, 2):
        agree = sum(r <= k for r in scored)
        print(f"agreement within {k}× combined error: {agree}/{len(scored)} curves with both `ok` ({agree / max(len(scored), 1):.0%})")
    statuses = sum(a["status"] == b["status"] for a, b in zip([*grid["points"], grid["global"]], [*seq["points"], seq["global"]], strict=True))
    print(f"same status: {statuses}/{len(ratios)}")
    print(f"evaluations: {used} of the full grid's {full} = {used / full:.2%} (per curve {min(fractions):.2%}–{max(fractions):.2%}; target ≤ 5 %)")
    print(f"wall time: grid {seconds['grid']:.1f} s, sequential {seconds['sequential']:.1f} s, ratio grid/sequential "
          f"{seconds['grid'] / seconds['sequential']:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    seq = parts.add_parser("sequential", help="the sequential estimator against the full grid")
    seq.add_argument("--arch", choices=["digits", "lenet5", "mlp"], default="digits")
    seq.add_argument("--n", type=int, help="samples (digits: its test split; others: 2000)")
    seq.add_argument("--train-epochs", type=int, default=1)
    seq.add_argument("--noise", choices=["add", "mul"], default="add")
    seq.add_argument("--at", help="points (default: all)")
    seq.add_argument("--repeats", type=int, default=5)
    seq.add_argument("--seed", type=int, default=0)
    seq.add_argument("--tolerance", type=float, default=0.05)
    seq.add_argument("--batch-size", type=int, default=1024)
    seq.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.arch != "digits" and args.n is None:
        args.n = 2000
    with tempfile.TemporaryDirectory(prefix="wn_scale_") as scratch:
        sequential_part(args, Path(scratch))


if __name__ == "__main__":
    main()
