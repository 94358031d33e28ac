"""Walking-scan cost: wn-onnx against the straightforward ways, ratios measured in one run.

For LeNet-5+BN (16 points) or the MLP+BN (11 points) on 32×32×3 inputs (Fashion-MNIST test
images padded to 32×32 and repeated over 3 channels when Debian's dataset-fashion-mnist is
installed, else Gaussian images), additive noise at every point, on one of two grids:

* ``--grid full``: 49 σ × 5 repeats on 10,000 images (the reference sweep);
* ``--grid small``: 13 σ (every 4th of the full grid) × 2 repeats on 5,000 images (CI gates,
  first looks), where what a scan pays once per (point, repeat) weighs most.

1. reference-style torch loop: a noise module at the active point, full network per config;
2. naive onnxruntime: the whole graph with ``drawn`` noise nodes, full network per config;
3. clean-suffix floor: the clean sub-graph after each point, same number of evaluations;
4. wn-onnx scan (walking, default settings) on the grid, run for real as the CLI; with the
   full grid also ``--adaptive`` and ``--estimator sequential`` (μ per point against the grid's:
   agreement within 2 combined errors, sample evaluations as a fraction of the grid's); and
   the same scan on 1 σ, whose time per point is the fixed cost a point pays whatever the grid.

1 and 2 are timed on a documented subset of configurations and projected (printed as such); 3 is
measured per point and multiplied by the configuration count; 4 is a full run.

``--part weights`` measures the noise models on weights instead, each a full CLI run of the same
trained network: the activation walk (add, 13 σ × 2 repeats) against mul on weights (13 levels ×
2 repeats; target ≤ 1.5× the activation walk), and pcm (8 times × 10 repeats on 2,000 images)
against mul on weights on the same levels count, repeats and images (target ≤ 2×); and the cost
of bit flips per million stored values. Usage:

    python benchmarks/bench_scan.py --arch lenet5                  # ~10 min on 2 cores
    python benchmarks/bench_scan.py --arch lenet5 --grid small
    python benchmarks/bench_scan.py --arch mlp --train-epochs 2
    python benchmarks/bench_scan.py --arch lenet5 --part weights   # ~3 min

``--part plan`` times ``plan --evaluate`` with its defaults (2,000 images, 5 draws) against the
scan that made its report, on the same images.

``--part sequential`` times the sequential walking scan of every point against the grid's on the
same σ range (the default 49 σ × 5 repeats, 2,000 images by default), both full CLI runs, and
measures what each spends inside onnxruntime's runs: the rest — start-up, the clean pass's Python,
set-up per point, noise draws, the estimator's own arithmetic — is the fixed cost a small model
pays (target: under 25 % of the sequential scan's wall time; printed). Its JSON keeps grid /
sequential.

``--json OUT.json`` writes the run's ratios with the machine and versions; ``--compare OLD.json``
flags every ratio more than 15 % worse than the old run's (exit code 1). The last measured
results are kept in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import torch

from wn_onnx.engine import Engine, providers_for
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import ExtractSuffixPass, InsertNoisePass, data_dependent, find_points, suffix_inputs
from wn_onnx.io.datasets import load_split
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, default_grid
from wn_onnx.training.export import export_onnx
from wn_onnx.training.nets import build
from wn_onnx.training.trainer import TrainConfig, train

TOLERANCE = 0.15  # a ratio this much worse than the compared run's is a regression
# each ratio and whether a larger value is better; --part sequential guards grid / sequential (a faster
# grid lowers it too: a flag there asks which of the two moved). The sequential scan's share outside
# onnxruntime is printed, not guarded: removing onnxruntime work the scan did twice raises it.
RATIOS = {"torch_loop_over_scan": True, "naive_over_scan": True, "scan_over_floor": False,
          "weights_mul_over_activations_add": False, "pcm_over_weights_mul": False, "plan_evaluate_over_scan": False,
          "grid_over_sequential": True}  # fmt: skip
SUBSET_SIGMAS = (0.1, 1.0)  # σ values timed for the projected baselines (1 repeat each)
GRIDS = {"full": (1, 5, 10000), "small": (4, 2, 5000)}  # every k-th σ of the default grid, repeats, images


def images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n CIFAR-shaped (3×32×32) images with labels."""
    try:
        split = load_split("fashion-mnist", "test", limit=n)
        x = np.pad(split.x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
        return np.repeat(x, 3, axis=1), split.y
    except WnError:
        rng = np.random.default_rng(0)
        return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def mu_text(curve: dict) -> str:
    """μ of a report curve, with its status when not ``ok``."""
    mu = "–" if curve["mu"] is None else f"{curve['mu']:.3g}"
    return mu if curve["status"] == "ok" else f"{mu}({curve['status']})"


def run_all(session: ort.InferenceSession, inputs: list[str], acts: list[dict]) -> None:
    for a in acts:
        session.run(None, {n: a[n] for n in inputs})


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(work: Path) -> None:
    """``work``: a scratch folder, deleted afterwards."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["lenet5", "mlp"], default="lenet5")
    parser.add_argument("--grid", choices=list(GRIDS), default="full")
    parser.add_argument("--n", type=int, help="images (default: 10000 full, 5000 small; 2000 with --part sequential)")
    parser.add_argument("--repeats", type=int, help="repeats (default: 5 full, 2 small)")
    parser.add_argument("--train-epochs", type=int, default=1, help="train on the images first (0: random weights)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--part", choices=["activations", "weights", "plan", "sequential"], default="activations")
    parser.add_argument("--json", type=Path, help="write the ratios, machine and versions here")
    parser.add_argument("--compare", type=Path, help="an earlier --json: flag ratios more than 15 %% worse")
    args = parser.parse_args()
    every, repeats, n = GRIDS[args.grid]
    args.repeats, args.n = args.repeats or repeats, args.n or (2000 if args.part == "sequential" else n)
    x, y = images(args.n)
    if args.train_epochs:
        cfg = TrainConfig(
            args.arch, "fashion-mnist-32x32x3", epochs=args.train_epochs, augment=False, device=args.device
        )
        net, _ = train(cfg, (x, y), (x[:1000], y[:1000]), 10, (3, 32, 32))
        net = net.cpu()
    else:
        torch.manual_seed(0)
        net = build(args.arch, (3, 32, 32), 10, bn=True).eval()
    model_path = export_onnx(net, (3, 32, 32), work / f"{args.arch}.onnx")
    np.savez(work / "data.npz", x=x, y=y)
    if args.part == "weights":
        finish(args, weights_part(model_path, work, x, y, args))
        return
    if args.part == "plan":
        finish(args, plan_part(model_path, work, x, y, args))
        return
    if args.part == "sequential":
        finish(args, sequential_part(model_path, work, x, y, args))
        return
    spec, grid = NoiseSpec("add"), default_grid(NoiseSpec("add"))[::every]
    loaded = load_model(model_path)
    points = find_points(loaded.model)
    configs = len(points) * len(grid) * args.repeats
    providers = providers_for(args.device)
    print(
        f"# {args.arch}+BN, {len(points)} points × {len(grid)} σ × {args.repeats} repeats = {configs} configs, {args.n} images"
    )
    print(f"# onnxruntime {ort.__version__} ({ort.get_device()} build), torch {torch.__version__} on {args.device}")
    batches = [(x[i : i + args.batch_size], y[i : i + args.batch_size]) for i in range(0, len(x), args.batch_size)]
    net = net.to(args.device)  # the torch baseline runs where the scan runs
    tbatches = [(torch.from_numpy(xb).to(args.device), torch.from_numpy(yb).to(args.device)) for xb, yb in batches]

    # 1. reference-style torch loop
    def torch_config(k: int, sigma: float) -> None:
        net.set_noise(spec, sigma, [k])
        with torch.no_grad():
            for xb, yb in tbatches:
                int((net(xb).argmax(1) == yb).sum())  # int(): waits for the device
        net.set_noise(None, 0.0, None)

    torch_config(0, 0.1)
    subset = [(k, s) for k in range(len(points)) for s in SUBSET_SIGMAS]
    t_torch = sum(timed(torch_config, k, s) for k, s in subset) / len(subset) * configs

    # 2. naive onnxruntime: one noisy graph, σ vector with one active entry
    model = loaded.fresh()
    InsertNoisePass([p.tensor for p in points], spec, source="drawn")(model)
    naive = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=providers)
    if naive.get_providers()[: len(providers)] != providers:
        sys.exit(f"asked for {providers}, onnxruntime started {naive.get_providers()}")
    print(f"# onnxruntime sessions run on {naive.get_providers()}")

    def naive_config(k: int, sigma: float) -> None:
        vec = np.zeros(len(points), np.float32)
        vec[k] = sigma
        for xb, yb in batches:
            (naive.run(["logits"], {"input": xb, "wn_sigma_add": vec})[0].argmax(1) == yb).sum()

    naive_config(0, 0.1)
    t_naive = sum(timed(naive_config, k, s) for k, s in subset) / len(subset) * configs

    # 3. clean-suffix floor
    engine = Engine(loaded, providers)
    per_config = 0.0
    for p in points:
        session, inputs, _ = engine.routes.suffix(p.tensor, spec, batches[0][0])
        if session is None:
            continue
        plain = engine.loaded.fresh()
        ExtractSuffixPass(suffix_inputs(plain.graph, p.tensor, data_dependent(plain.graph)), ["logits"])(plain)
        clean = ort.InferenceSession(ir.to_proto(plain).SerializeToString(), providers=providers)
        acts = [engine.run_values(xb, inputs) for xb, _ in batches]
        clean.run(None, {n: acts[0][n] for n in inputs})
        per_config += timed(run_all, clean, inputs, acts)
    t_floor = per_config * len(grid) * args.repeats

    # 4. wn-onnx scan, for real, as users run it
    def cli(*extra: str, sigmas: np.ndarray = grid) -> tuple[float, dict]:
        out = work / f"report{len(sigmas)}{'_'.join(extra)}.json"
        cmd = [sys.executable, "-m", "wn_onnx", "scan", str(model_path), "--data", str(work / "data.npz"), "--mode", "walking",
               "--sigmas", ",".join(f"{v:.17g}" for v in sigmas), "--repeats", str(args.repeats),
               "--batch-size", str(args.batch_size), "--device", args.device, "--quiet", "--out", str(out), *extra]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start, json.loads(out.read_text())

    t_scan, full = cli()
    t_one, _ = cli(sigmas=grid[len(grid) // 2 : len(grid) // 2 + 1])
    rows = [
        (f"1 torch loop (projected from {len(subset)} configs)", t_torch),
        (f"2 naive onnxruntime (projected from {len(subset)} configs)", t_naive),
        ("3 clean-suffix floor (measured per point × configs)", t_floor),
        (f"4 wn-onnx scan ({args.grid} grid, full run)", t_scan),
        ("4b wn-onnx scan on 1 σ (full run)", t_one),
    ]
    if args.grid == "full":
        t_adapt, fast = cli("--adaptive")
        rows.insert(4, ("4a wn-onnx scan --adaptive (full run)", t_adapt))
        t_seq, seq = cli("--estimator", "sequential")
        rows.insert(5, ("4c wn-onnx scan --estimator sequential (full run)", t_seq))
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # the largest of the runs
    print(f"\n| {'what':52s} | seconds |")
    print(f"|{'-' * 54}|---------|")
    for name, t in rows:
        print(f"| {name:52s} | {t:7.1f} |")
    target = {"full": 15, "small": 10}[args.grid]
    finish(args, {"torch_loop_over_scan": t_torch / t_scan, "naive_over_scan": t_naive / t_scan,
                  "scan_over_floor": t_scan / t_floor})  # fmt: skip
    print(f"\nratio 1/4 = {t_torch / t_scan:.1f}  (target ≥ {target} on 2 cores)")
    print(f"ratio 2/4 = {t_naive / t_scan:.1f}")
    print(f"ratio 4/3 = {t_scan / t_floor:.2f}  (target ≤ 1.5)")
    print(f"fixed cost per point (4b / points) = {t_one / len(points):.3f} s  (target ≤ 0.15 on LeNet-5)")
    if args.grid == "full":
        evals = sum(p["adaptive"]["evaluations"] for p in fast["points"])
        agree = [
            abs(a["mu"] - b["mu"]) <= np.hypot(a["mu_err"] or 0, b["mu_err"] or 0) or a["status"] != "ok"
            for a, b in zip(full["points"], fast["points"], strict=True)
        ]
        print(f"adaptive: {evals} σ evaluations vs {len(grid) * len(points)} ({len(grid) * len(points) / evals:.1f}× fewer), "
              f"μ within combined fit error at {sum(agree)}/{len(agree)} points, {t_adapt:.1f} s")  # fmt: skip
    if args.grid == "full":
        used = sum(p["sequential"]["evaluations"] for p in seq["points"])
        grid_evals = sum(p["sequential"]["grid_evaluations"] for p in seq["points"])
        agree = [
            abs(a["mu"] - b["mu"]) <= 2 * np.hypot(a["mu_err"], b["mu_err"])
            for a, b in zip(full["points"], seq["points"], strict=True)
            if a["status"] == b["status"] == "ok"
        ]
        print(f"sequential: {used / grid_evals:.2%} of the grid's sample evaluations (target ≤ 5 %), μ within 2 combined "
              f"errors at {sum(agree)}/{len(agree)} points with both `ok`, ratio 4/4c = {t_scan / t_seq:.1f}, "
              f"μ: " + ", ".join(f"{b['index']}:{mu_text(b)}" for b in seq["points"]))  # fmt: skip
    print(f"peak RSS of the wn-onnx scan processes: {rss_gb:.2f} GB (target < 2)")
    both = zip(full["points"], fast["points"], strict=True) if args.grid == "full" else ((a, None) for a in full["points"])
    print(f"μ per point ({args.grid}{' | adaptive' if args.grid == 'full' else ''}): "
          + ", ".join(f"{a['index']}:{mu_text(a)}{'' if b is None else '|' + mu_text(b)}" for a, b in both))  # fmt: skip


def regressions(old: dict, new: dict, tolerance: float = TOLERANCE) -> list[str]:
    """The ratios of ``new`` more than ``tolerance`` worse than ``old``'s (direction per RATIOS)."""
    found = []
    for name, larger_is_better in RATIOS.items():
        if name in old.get("ratios", {}) and name in new.get("ratios", {}):
            a, b = old["ratios"][name], new["ratios"][name]
            worse = b < a * (1 - tolerance) if larger_is_better else b > a * (1 + tolerance)
            if worse:
                found.append(f"{name}: {a:.3g} → {b:.3g} (more than {tolerance:.0%} worse)")
    return found


def finish(args: argparse.Namespace, ratios: dict) -> None:
    """Write the run's ratios (``--json``) and compare them with an earlier run (``--compare``)."""
    result = {"bench": "bench_scan", "part": args.part, "arch": args.arch, "grid": args.grid, "images": args.n,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
              "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__, "torch": torch.__version__,
                           "python": platform.python_version()},
              "ratios": {k: round(float(v), 4) for k, v in ratios.items()}}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.compare:
        found = regressions(json.loads(args.compare.read_text()), result)
        for line in found:
            print(f"REGRESSION {line}")
        if found:
            sys.exit(1)
        print(f"no ratio more than {TOLERANCE:.0%} worse than {args.compare}")


def weights_part(model_path: Path, work: Path, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict:
    """Noise models on weights against the activation walk, full CLI runs on one machine, one run."""
    from wn_onnx.graph_passes.weights import find_weight_points
    from wn_onnx.noise import BitFlip, Reference

    layers = len(find_weight_points(load_model(model_path).model))
    np.savez(work / "small.npz", x=x[:2000], y=y[:2000])

    def cli(data: str, *extra: str) -> float:
        cmd = [sys.executable, "-m", "wn_onnx", "scan", str(model_path), "--data", str(work / data), "--mode", "walking",
               "--batch-size", str(args.batch_size), "--quiet", "--out", str(work / "r.json"), *extra]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    act = cli("data.npz", "--noise", "add", "--sigmas", "log:1e-2:1e2:13", "--repeats", "2")
    mul = cli("data.npz", "--on", "weights", "--noise", "mul", "--levels", "log:1e-2:1e2:13", "--repeats", "2")
    mul8 = cli("small.npz", "--on", "weights", "--noise", "mul", "--levels", "log:1e-2:1e2:8", "--repeats", "10")
    pcm = cli("small.npz", "--on", "weights", "--noise", "pcm", "--levels", "log:1s:10y:8", "--repeats", "10")
    values = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    flips = []
    for fmt in ("int8", "fp32"):
        model = BitFlip(fmt)
        for p in (1e-4, 1e-2):
            start = time.perf_counter()
            model.perturb(values, p, model.draw(np.random.default_rng(1), values.shape, p), Reference.of_weight(values, None))
            flips.append((fmt, p, time.perf_counter() - start))
    print(f"# {args.arch}: {layers} weight layers; {len(x)} images (pcm rows: 2,000)")
    print(f"| {'what':60s} | seconds |")
    print(f"|{'-' * 62}|---------|")
    for name, t in (("activation walk, add, 13 σ × 2 repeats", act), ("weight walk, mul, 13 levels × 2 repeats", mul),
                    ("weight walk, mul, 8 levels × 10 repeats, 2,000 images", mul8),
                    ("weight walk, pcm, 8 times × 10 repeats, 2,000 images", pcm)):  # fmt: skip
        print(f"| {name:60s} | {t:7.1f} |")
    print(f"\nweights mul / activations add = {mul / act:.2f}  (target ≤ 1.5)")
    print(f"pcm / mul on weights = {pcm / mul8:.2f}  (target ≤ 2)")
    for fmt, p, t in flips:
        print(f"bit flips, {fmt}, p = {p:g}: {t:.3f} s per million values (draw and apply)")
    return {"weights_mul_over_activations_add": mul / act, "pcm_over_weights_mul": pcm / mul8}


def plan_part(model_path: Path, work: Path, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict:
    """``plan --evaluate`` with its defaults on 2,000 images and 5 draws, against the scan that made
    its report (13 σ × 5 repeats, walking and global, the same images): full CLI runs, one run."""
    np.savez(work / "plan.npz", x=x[:2000], y=y[:2000])
    data, report = str(work / "plan.npz"), str(work / "r.json")

    def cli(*command: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "wn_onnx", *command], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    scan = cli("scan", str(model_path), "--data", data, "--sigmas", "log:1e-2:1e2:13", "--repeats", "5", "--quiet",
               "--out", report)  # fmt: skip
    plan = cli("plan", report, "--evaluate", "--sigma", "global-mu", "--model", str(model_path), "--data", data,
               "--repeats", "5", "--quiet", "--json")  # fmt: skip
    print(f"# {args.arch}: plan --evaluate (uniform and inverse-μ; greedy only when named), 2,000 images, 5 draws")
    print(f"scan {scan:.1f} s · plan --evaluate {plan:.1f} s · plan / scan = {plan / scan:.2f}")
    return {"plan_evaluate_over_scan": plan / scan}


# Runs the CLI with onnxruntime's run calls timed; argv: OUT-FILE then the CLI's arguments.
TIMED_CLI = """
import sys, time
from onnxruntime.capi import onnxruntime_inference_collection as ort_py
spent = [0.0]
def timed(call):
    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start
    return wrapped
ort_py.InferenceSession.run = timed(ort_py.InferenceSession.run)
ort_py.InferenceSession.run_with_iobinding = timed(ort_py.InferenceSession.run_with_iobinding)
out, sys.argv = sys.argv[1], ["wn-onnx", *sys.argv[2:]]
from wn_onnx.cli.app import run
try:
    run()
finally:
    open(out, "w").write(str(spent[0]))
"""


def sequential_part(model_path: Path, work: Path, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict:
    """The sequential walking scan against the grid's (default grid, 5 repeats), full CLI runs with
    onnxruntime's runs timed inside; one run each."""
    np.savez(work / "seq.npz", x=x, y=y)

    def cli(*extra: str) -> tuple[float, float, dict]:
        out, spent = work / "seq.json", work / "ort.txt"
        cmd = [sys.executable, "-c", TIMED_CLI, str(spent), "scan", str(model_path), "--data", str(work / "seq.npz"),
               "--mode", "walking", "--repeats", "5", "--quiet", "--out", str(out), *extra]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start, float(spent.read_text()), json.loads(out.read_text())

    t_grid, ort_grid, grid = cli()
    t_seq, ort_seq, seq = cli("--estimator", "sequential")
    used = sum(p["sequential"]["evaluations"] for p in seq["points"])
    total = sum(p["sequential"]["grid_evaluations"] for p in seq["points"])
    agree = [abs(a["mu"] - b["mu"]) <= 2 * np.hypot(a["mu_err"], b["mu_err"])
             for a, b in zip(grid["points"], seq["points"], strict=True) if a["status"] == b["status"] == "ok"]  # fmt: skip
    outside = 1 - ort_seq / t_seq
    print(f"# {args.arch}: {len(seq['points'])} points walked, default grid × 5 repeats, {len(x)} images")
    print(f"grid {t_grid:.1f} s ({1 - ort_grid / t_grid:.0%} outside onnxruntime) · sequential {t_seq:.1f} s "
          f"({outside:.0%} outside onnxruntime; target < 25 %) · grid / sequential = {t_grid / t_seq:.1f} · "
          f"{used / total:.2%} of the grid's evaluations · μ within 2 combined errors at {sum(agree)}/{len(agree)}")  # fmt: skip
    return {"grid_over_sequential": t_grid / t_seq}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="wn_bench_") as scratch:
        main(Path(scratch))
