"""Table 3: guided multi-execution on Fashion-MNIST MLPs (and LeNet-5 with ``--lenet``).

For each network: train (reference recipe, ``--epochs``), walking + global additive scan
(inference-only noise), then uniform vs inverse-mu vs greedy plans (budget 2 × points) at the
global μ, ``--repeats`` draws shared by all plans. The paper's direction: guided > uniform.

    python benchmarks/reproduce_table3.py --epochs 10 --repeats 20 --limit 2000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import Dataset
from wn_onnx.io.datasets import load_split
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.planner import PlanInput, greedy, inverse_mu, uniform
from wn_onnx.scanner import ScanRequest, run_scan
from wn_onnx.training.export import export_onnx
from wn_onnx.training.trainer import TrainConfig, train

PAPER = {"mlp": {True: "MNIST 71.4 → 80.6; CIFAR-10 41.7 → 43.7", False: "MNIST 68.2 → 87.1; CIFAR-10 38.9 → 43.4"},
         "lenet5": {True: "CIFAR-10 58.5 → 61.1", False: "CIFAR-10 57.2 → 62.4"}}  # fmt: skip


def main(work: Path) -> None:
    """``work``: a scratch folder, deleted afterwards."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--limit", type=int, default=None, help="test images used (default all 10,000)")
    parser.add_argument("--lenet", action="store_true", help="also LeNet-5")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    tr = load_split("fashion-mnist", "train", args.data_dir)
    te = load_split("fashion-mnist", "test", args.data_dir, limit=args.limit)
    data = Dataset(te.x, te.y, "fmnist test")
    rows = []
    for arch in ["mlp", *(["lenet5"] if args.lenet else [])]:
        for bn in (True, False):
            net, _ = train(
                TrainConfig(arch, "fashion-mnist", bn=bn, epochs=args.epochs),
                (tr.x, tr.y),
                (te.x, te.y),
                10,
                (1, 28, 28),
                tr.info.mean,
                tr.info.std,
            )
            loaded = load_model(export_onnx(net, (1, 28, 28), work / f"{arch}{bn}.onnx"))
            report = run_scan(
                loaded, data, SweepSettings(parse_grid("log:1e-2:1e2:33"), NoiseSpec("add"), 5), ScanRequest()
            )
            engine, points = Engine(loaded, ["CPUExecutionProvider"]), find_points(loaded.model)
            inp, level = PlanInput.from_report(report), report["global"]["mu"]
            budget = 2 * len(points)

            def acc(plan, seed=0, repeats=args.repeats, engine=engine, points=points, level=level):
                return engine.plan_accuracy(points, NoiseSpec("add"), level, plan, data, repeats, seed)

            plans = {"uniform": uniform(len(points), budget), "inverse-mu": inverse_mu(inp.mu, budget, inp.robust)}
            plans["greedy"], _ = greedy(
                len(points), budget, lambda p, acc=acc: float(acc(p, 1, max(5, args.repeats // 4)).mean())
            )
            result = {name: acc(plan) for name, plan in plans.items()}
            rows.append((arch, bn, report["clean_accuracy"], level, plans, result))
            print(f"{arch} {'BN' if bn else 'no-BN'}: global μ {level:.3g}; " + "; ".join(
                f"{k} {v.mean():.1%} ± {v.std(ddof=1):.1%} {plans[k].tolist()}" for k, v in result.items()), flush=True)  # fmt: skip
    print(
        "\n| model | BN | clean | σ = global μ | uniform | inverse-mu (guided) | greedy | paper (Table 3) |\n|---|---|---|---|---|---|---|---|"
    )
    for arch, bn, clean, level, _plans, result in rows:
        cells = " | ".join(
            f"{result[k].mean():.1%} ± {result[k].std(ddof=1):.1%}" for k in ("uniform", "inverse-mu", "greedy")
        )
        print(f"| {arch} | {'yes' if bn else 'no'} | {clean:.1%} | {level:.3g} | {cells} | {PAPER[arch][bn]} |")
    print(
        f"\n{args.epochs} epochs, {len(data)} test images, {args.repeats} draws per plan (the same draws for every plan)."
    )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="wn_t3_") as scratch:
        main(Path(scratch))
