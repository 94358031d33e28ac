"""Table 4 (inference-only global μ) for Fashion-MNIST: MLP and LeNet-5, with and without BN.

Trains each network with the reference recipe (Adam 1e-3, cosine, batch 128, crop+flip), then
scans it with global additive and multiplicative noise (no noise after BN in the global sweep,
as in the paper's tables) and prints μ ± err beside the paper's values. The paper trains 100
epochs; ``--epochs`` shortens the run (say which in any comparison).

    python benchmarks/reproduce_fashion_mnist.py --epochs 10 --out fmnist_table4.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from wn_onnx.engine import SweepSettings
from wn_onnx.io.data import Dataset
from wn_onnx.io.datasets import load_split
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, default_grid
from wn_onnx.scanner import ScanRequest, run_scan
from wn_onnx.training.export import export_onnx
from wn_onnx.training.trainer import TrainConfig, train

PAPER = {  # docs/reference.md, Table 4, FashionMNIST: (add BN, add no-BN, mul BN, mul no-BN)
    "mlp": {"add": {True: 0.30, False: 1.19}, "mul": {True: 0.25, False: 0.40}},
    "lenet5": {"add": {True: 0.09, False: 0.17}, "mul": {True: 0.23, False: 0.35}},
}


def main(work: Path) -> None:
    """``work``: a scratch folder, deleted afterwards."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lenet-epochs", type=int, default=None, help="LeNet-5 epochs (default: --epochs)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="test images scanned (default all 10,000)")
    parser.add_argument("--archs", default="mlp,lenet5")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    tr = load_split("fashion-mnist", "train", args.data_dir)
    te = load_split("fashion-mnist", "test", args.data_dir, limit=args.limit)
    rows = []
    for arch in args.archs.split(","):
        for bn in (True, False):
            epochs = args.lenet_epochs if arch == "lenet5" and args.lenet_epochs else args.epochs
            began = time.perf_counter()
            cfg = TrainConfig(arch, "fashion-mnist", bn=bn, epochs=epochs)
            net, _hist = train(cfg, (tr.x, tr.y), (te.x, te.y), 10, (1, 28, 28), tr.info.mean, tr.info.std)
            path = export_onnx(net, (1, 28, 28), work / f"{arch}_{'bn' if bn else 'nobn'}.onnx")
            trained = time.perf_counter() - began
            for kind in ("add", "mul"):
                spec = NoiseSpec(kind)
                st = SweepSettings(default_grid(spec), spec, repeats=args.repeats)
                report = run_scan(load_model(path), Dataset(te.x, te.y, "fmnist test"), st,
                                  ScanRequest(mode="global", global_after_bn=False))  # fmt: skip
                g = report["global"]
                rows.append({"arch": arch, "bn": bn, "noise": kind, "epochs": epochs, "clean_accuracy": report["clean_accuracy"],
                             "mu": g["mu"], "mu_err": g["mu_err"], "status": g["status"], "paper_mu": PAPER[arch][kind][bn],
                             "train_seconds": round(trained, 1), "samples": report["data"]["samples"],
                             "chance": report["chance"], "sigmas": g["sigmas"], "accuracy": g["accuracy"],
                             "mu_threshold": g["fit"]["mu_threshold"], "a_max": g["a_max"]})  # fmt: skip
                r = rows[-1]
                print(f"{arch:7s} {'BN   ' if bn else 'no-BN'} {kind}: μ = {r['mu']:.3g} ± {r['mu_err'] or 0:.2g} ({r['status']}), "
                      f"paper {r['paper_mu']}, clean {r['clean_accuracy']:.2%}, {epochs} epochs", flush=True)  # fmt: skip
    print("\n| model | BN | noise | epochs | clean acc | μ (wn-onnx) | status | threshold crossing | μ (paper, Table 4) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mu = f"{r['mu']:.3g} ± {r['mu_err']:.2g}" if r["mu_err"] is not None else f"{r['mu']:.3g}"
        print(f"| {r['arch']} | {'yes' if r['bn'] else 'no'} | {r['noise']} | {r['epochs']} | {r['clean_accuracy']:.2%} | {mu} "
              f"| {r['status']} | {r['mu_threshold'] or float('nan'):.3g} | {r['paper_mu']} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="wn_fmnist_") as scratch:
        main(Path(scratch))
