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

Part ``memory``: peak resident memory of a walking scan of a few points of a ResNet-18-shaped
model (224×224, 1000 classes) under ``--memory`` against the same scan with no practical bound
(``--memory 1T``), each a process of its own (ru_maxrss); the two reports must be identical. The
net is ResNet-18's layout written here (torchvision is not needed): random weights, BatchNorm
statistics calibrated on the data (one pass in training mode with a cumulative average),
exported with BN kept apart (69 points). The data are label-free Gaussian images in a ``.npy``,
streamed by the scan.

    python benchmarks/bench_scale.py memory --images 48 --at 0,20,40 --memory 1G --sigmas log:1e-2:1e4:3

Measured so (2 shared CPU cores): peak RSS 797 MiB under --memory 1G, 1262 MiB unbounded
(ratio 0.63), 91 s vs 49 s, the same report.

Part ``deploy``: the deployment-size scan of issue #17 — ResNet-18's layout (as above) on
``--images`` label-free 224×224 images, walked with ``--estimator sequential`` under the default
memory budget, one process: wall time and peak RSS for the points ``--at`` (spread over the
network), the sample evaluations used as a fraction of the full 49 σ × 5 repeats grid, and the
whole-network time projected as (time per walked point) × 69 + the clean pass (a point's cost
grows with the graph after it, so a spread of points is a fair sample). ``--arch transformer``
runs the same on a small TransformerEncoder classifier over sequences, whose grid comparison is
the ``sequential`` part's ``--arch transformer``.

    python benchmarks/bench_scale.py deploy --images 1000 --at 0,9,18,27,36,45,54,63,68
    python benchmarks/bench_scale.py sequential --arch transformer --n 2000

Part ``bound``: the sequential estimator on simulated curves with a known μ (as
tests/test_sequential.py simulates them: a_max 0.95, chance 0.1, 1,000 samples × 5 draws, σ
1e-2…1e10), per curve the trials used against the information bound of the true curve, split
into the probes at the ends of the σ range and the placed trials, with the bias of μ and the
share of runs whose μ ± μ_err covers the truth.

    python benchmarks/bench_scale.py bound --runs 100
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wn_onnx.engine import SweepSettings
from wn_onnx.engine.memory import peak_rss_of
from wn_onnx.io.data import Dataset, load_npz
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, default_grid
from wn_onnx.scan_config import ScanConfig
from wn_onnx.scanner import run_scan


def model_and_data(args: argparse.Namespace, work: Path) -> tuple[Path, Dataset]:
    """The embedded digits model and its test split, or a LeNet-5/MLP on bench_scan's images."""
    if args.arch == "digits":
        return DEFAULT_MODEL, load_npz(DEFAULT_DATA, args.n)
    if args.arch == "transformer":
        x, y, net = sequences(args.n, trained=True)
        return transformer_onnx(net, work), Dataset(x, y, "synthetic sequences")
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


SEQ, DIM, CLASSES = 32, 64, 10  # the transformer benchmark: tokens per sequence, width, classes


class Encoder(nn.Module):
    """A small TransformerEncoder classifier (2 layers, 4 heads) on [N, SEQ, DIM] sequences."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(DIM, 4, 2 * DIM, dropout=0.0, batch_first=True)
        self.enc, self.fc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(DIM, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(x).mean(1))


def sequences(n: int, trained: bool) -> tuple[np.ndarray, np.ndarray, nn.Module]:
    """n Gaussian sequences labelled by a fixed random linear read-out of their mean token, a
    quarter of the labels replaced by random ones (so no model passes ≈ 78 %), and an Encoder
    trained on 4,000 others for a few hundred steps."""
    rng = np.random.default_rng(0)
    read = rng.standard_normal((DIM, CLASSES)).astype(np.float32)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((count, SEQ, DIM)).astype(np.float32)
        y = (x.mean(1) @ read).argmax(1)
        noisy = rng.random(count) < 0.25
        y[noisy] = rng.integers(0, CLASSES, int(noisy.sum()))
        return x, y.astype(np.int64)

    torch.manual_seed(0)
    net = Encoder()
    if trained:
        xt, yt = (torch.from_numpy(a) for a in make(4000))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(300):
            i = torch.randint(0, len(xt), (64,))
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i]), yt[i]).backward()
            opt.step()
    x, y = make(n)
    return x, y, net.eval()


def transformer_onnx(net: nn.Module, work: Path) -> Path:
    from wn_onnx.training.export import export_onnx

    return export_onnx(net, (SEQ, DIM), work / "encoder.onnx")


def deploy_part(args: argparse.Namespace, work: Path) -> None:
    from wn_onnx.graph_passes import find_points

    if args.arch == "resnet18":
        model, x = deploy_resnet18(args.images, work)
        what = "ResNet-18 layout, 224×224, 1000 classes, BN calibrated on the images"
    else:
        x, _y, net = sequences(args.images, trained=True)
        model, what = transformer_onnx(net, work), f"TransformerEncoder (2 layers, 4 heads), {SEQ}×{DIM} sequences"
    np.save(work / "x.npy", x)
    total = len(find_points(load_model(model).model))
    at = [int(v) for v in args.at.split(",")] if args.at else list(range(total))
    del x
    scan = [sys.executable, "-m", "wn_onnx", "scan", str(model), "--data", str(work / "x.npy"), "--label-free",
            "--mode", "walking", "--json", "--quiet"]  # fmt: skip
    argv = [*scan, "--estimator", "sequential", "--tolerance", str(args.tolerance), "--at", ",".join(map(str, at))]
    clean = [*scan, "--sigmas", "0.001", "--at", str(at[-1]), "--repeats", "1"]
    began = time.perf_counter()
    peak, done = peak_rss_of(argv)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"scan failed: {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout)
    began = time.perf_counter()
    _peak, single = peak_rss_of(clean)  # the clean pass and start-up, with one cheap point
    base = time.perf_counter() - began
    if single.returncode != 0:
        raise SystemExit(f"scan failed: {single.stderr.strip()[-500:]}")
    used = sum(p["sequential"]["evaluations"] for p in report["points"])
    full = sum(p["sequential"]["grid_evaluations"] for p in report["points"])
    per_point = max(seconds - base, 0.0) / len(at)
    print(f"# {what}; {args.images} label-free samples; {total} points, walked {len(at)}: {at}")
    print("| point | μ ± err (status) | evaluations | fraction of the grid | fewest possible (information bound) |")
    print("|---|---|---|---|---|")
    bounds = []
    for p in report["points"]:
        err = "" if p["mu_err"] is None else f" ± {p['mu_err']:.2g}"
        least = fewest_trials(p, args.tolerance)
        if least is not None:
            bounds.append((least, p["sequential"]["evaluations"]))
        print(f"| {p['index']} | {p['mu']:.4g}{err} ({p['status']}) | {p['sequential']['evaluations']} | "
              f"{p['sequential']['fraction']:.2%} | {'–' if least is None else f'{least:.0f}'} |")  # fmt: skip
    print(f"wall time {seconds:.0f} s for {len(at)} points (start-up and clean pass {base:.0f} s); peak RSS "
          f"{peak / 2**30:.2f} GiB (default budget)")  # fmt: skip
    print(f"evaluations: {used / full:.2%} of the full grid's (target ≤ 5 %)")
    print(f"projected whole-network scan: {base + per_point * total:.0f} s = {(base + per_point * total) / 60:.1f} min "
          f"(target ≤ 30 min on this 2-core machine)")  # fmt: skip
    if bounds:
        least, spent = (sum(v) for v in zip(*bounds, strict=True))
        limit = base + per_point * total * least / spent
        print(f"information bound: the `ok` points used {spent / least:.1f}× the fewest trials any design could for "
              f"±{args.tolerance:g}·μ; a whole-network scan at that bound would still take {limit / 60:.1f} min")  # fmt: skip


def fewest_trials(curve: dict, tolerance: float) -> float | None:
    """The trials that even a perfect design needs for μ to ±``tolerance``·μ on this curve (None
    without a fitted drop): every trial at the σ where one outcome tells most about log μ, the
    slope and shape known — the Fisher information of a Bernoulli outcome, (∂p/∂log μ)²/(p(1 − p)),
    at its largest. A lower bound: the estimator must also find the drop and learn the slope."""
    from wn_onnx.results.fit import shaped_curve

    fit = curve["fit"]
    if curve["status"] != "ok" or fit.get("slope") is None or fit.get("shape") is None:
        return None
    mu, h = curve["mu"], 1e-4
    sigma = mu * np.exp(np.linspace(-8, 8, 4001) * max(fit["slope"], 1e-3) / (mu if fit["shape"] == "linear" else 1))

    def p(m: float) -> np.ndarray:
        return shaped_curve(sigma, m, fit["slope"], curve["a_max"], curve["a_min"], fit["shape"])

    slope = (p(mu * np.exp(h)) - p(mu * np.exp(-h))) / (2 * h)
    q = np.clip(p(mu), 1e-6, 1 - 1e-6)
    return float(1 / (np.max(slope**2 / (q * (1 - q))) * tolerance**2))


BOUND_CURVES = [(shape, mu, s) for shape, mu in (("log", 0.5), ("frechet", 3.0), ("probit", 0.05)) for s in (0.5, 1.0)]
A_MAX, CHANCE = 0.95, 0.1  # the simulated curves' plateaus (as tests/test_sequential.py's)


def true_curve(shape: str, mu: float, s: float):
    """p(σ) of a simulated curve: a fitted shape, or ``probit`` (a normal CDF in log σ, none of them)."""
    from scipy.stats import norm

    from wn_onnx.results.fit import _UNIT

    unit = norm.sf if shape == "probit" else _UNIT[shape]
    return lambda sigma: CHANCE + (A_MAX - CHANCE) * unit(np.log(np.asarray(sigma) / mu) / s)


def simulated(shape: str, mu: float, s: float, n: int, repeats: int, seed: int):
    """Outcomes as tests/test_sequential.simulated gives them: sample i under draw r is correct
    while p(σ) exceeds its own uniform U[r, i]."""
    u, p = np.random.default_rng(seed).random((repeats, n)), true_curve(shape, mu, s)
    return lambda sigma, rows, r: (u[r, rows] < p(sigma), np.zeros(len(rows), bool))


def bound_part(args: argparse.Namespace, _work: Path) -> None:
    from wn_onnx.results.sequential import estimate

    n, repeats, lo, hi = 1000, 5, 1e-2, 1e10
    print(f"# simulated curves, a_max {A_MAX}, chance {CHANCE}, {n} samples × {repeats} draws, tolerance "
          f"{args.tolerance}, {args.runs} runs each")  # fmt: skip
    print("| true curve | bound | trials (× bound) | probes σ_hi + σ_lo | placed (× bound) | bias of μ | μ ± err covers |")
    print("|---|---|---|---|---|---|---|")
    for shape, mu, s in BOUND_CURVES:
        sigma = mu * np.exp(np.linspace(-8, 8, 4001) * s)
        p = true_curve(shape, mu, s)(sigma)
        least = 1 / (np.max(np.gradient(p, np.log(sigma)) ** 2 / (p * (1 - p))) * args.tolerance**2)
        used, ends, mus, errs = [], [], [], []
        for run in range(args.runs):
            got = estimate(simulated(shape, mu, s, n, repeats, run), n, repeats, lo, hi, A_MAX, CHANCE, 49 * n * repeats,
                           args.tolerance, seed=run)  # fmt: skip
            trials = dict(zip(got["sigmas"], got["sequential"]["trials"], strict=True))
            used.append(got["sequential"]["evaluations"])
            ends.append((trials.get(hi, 0), trials.get(lo, 0)))
            mus.append(got["mu"])
            errs.append(got["mu_err"])
        total, (top, bottom), mus = np.mean(used), np.mean(ends, axis=0), np.array(mus)
        cover = np.mean(np.abs(mus - mu) <= np.array(errs))
        print(f"| {shape}, μ {mu:g}, s {s:g} | {least:.0f} | {total:.0f} ({total / least:.2f}×) | {top:.0f} + {bottom:.0f} | "
              f"{total - top - bottom:.0f} ({(total - top - bottom) / least:.2f}×) | {np.mean(mus) / mu - 1:+.1%} | {cover:.2f} |")  # fmt: skip


def sequential_part(args: argparse.Namespace, work: Path) -> None:
    path, data = model_and_data(args, work)
    loaded = load_model(path)
    spec = NoiseSpec(args.noise)
    st = SweepSettings(default_grid(spec), spec, args.repeats, args.seed, args.batch_size)
    reports, seconds = {}, {}
    for estimator in ("grid", "sequential"):
        config = ScanConfig(noise=spec, levels=st.sigmas, repeats=args.repeats, seed=args.seed, batch_size=args.batch_size,
                            at=args.at, threads=args.threads, tolerance=args.tolerance, estimator=estimator)  # fmt: skip
        start = time.perf_counter()
        reports[estimator] = run_scan(loaded, data, config)
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


class Block(nn.Module):
    """ResNet's basic block: two 3×3 convs with BN, a 1×1 projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


def resnet18(classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def calibrated(net: nn.Module, x: np.ndarray) -> nn.Module:
    """BN running statistics from ``x`` (a cumulative average over batches), then eval mode."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for start in range(0, len(x), 16):
            net(torch.from_numpy(x[start : start + 16]))
    return net.eval()


def deploy_resnet18(images: int, work: Path) -> tuple[Path, np.ndarray]:
    """The deployment-size model and data (also gpu_check.py --deploy's): ResNet-18's layout with
    seeded random weights, BN calibrated on the first 256 of ``images`` seeded Gaussian 224×224
    images (label-free), exported to ``work``/resnet18.onnx (69 points). (model, images)."""
    from wn_onnx.training.export import export_onnx

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((images, 3, 224, 224)).astype(np.float32)
    return export_onnx(calibrated(resnet18(), x[:256]), (3, 224, 224), work / "resnet18.onnx"), x


def scan_peak(model: Path, data: Path, at: str, memory: str, sigmas: str, repeats: int) -> tuple[float, float, dict]:
    """(peak MiB, seconds, report) of a walking, label-free scan in a process of its own."""
    argv = [sys.executable, "-m", "wn_onnx", "scan", str(model), "--data", str(data), "--label-free", "--mode", "walking",
            "--at", at, "--sigmas", sigmas, "--repeats", str(repeats), "--memory", memory, "--json", "--quiet"]  # fmt: skip
    began = time.perf_counter()
    peak, done = peak_rss_of(argv)
    if done.returncode != 0:
        raise SystemExit(f"scan --memory {memory} failed: {done.stderr.strip()[-500:]}")
    return peak / 2**20, time.perf_counter() - began, json.loads(done.stdout)


def memory_part(args: argparse.Namespace, work: Path) -> None:
    from wn_onnx.training.export import export_onnx

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((args.images, 3, 224, 224)).astype(np.float32)
    np.save(work / "x.npy", x)
    net = calibrated(resnet18(), x)
    model = export_onnx(net, (3, 224, 224), work / "resnet18.onnx")
    print(f"ResNet-18 shape, 224×224, 1000 classes: {model.stat().st_size / 2**20:.0f} MiB of ONNX; "
          f"{args.images} label-free images ({x.nbytes / 2**20:.0f} MiB, streamed from .npy); walking points {args.at}")  # fmt: skip
    rows = {}
    for memory in (args.memory, "1T"):
        peak, seconds, report = scan_peak(model, work / "x.npy", args.at, memory, args.sigmas, args.repeats)
        rows[memory] = (peak, report)
        print(f"--memory {memory:>4}: peak RSS {peak:7.0f} MiB, {seconds:6.1f} s, "
              f"μ {[round(p['mu'], 4) if p['mu'] else None for p in report['points']]}")  # fmt: skip
    (bounded, a), (unbounded, b) = rows[args.memory], rows["1T"]
    same = [(p["accuracy"], p["mu"]) for p in a["points"]] == [(p["accuracy"], p["mu"]) for p in b["points"]]
    print(f"bounded / unbounded peak: {bounded / unbounded:.2f}; same report: {same}")
    if not same:
        raise SystemExit("the bounded scan's report differs from the unbounded one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    seq = parts.add_parser("sequential", help="the sequential estimator against the full grid")
    seq.add_argument("--arch", choices=["digits", "lenet5", "mlp", "transformer"], default="digits")
    seq.add_argument("--n", type=int, help="samples (digits: its test split; others: 2000)")
    seq.add_argument("--train-epochs", type=int, default=1)
    seq.add_argument("--noise", choices=["add", "mul"], default="add")
    seq.add_argument("--at", help="points (default: all)")
    seq.add_argument("--repeats", type=int, default=5)
    seq.add_argument("--seed", type=int, default=0)
    seq.add_argument("--tolerance", type=float, default=0.05)
    seq.add_argument("--batch-size", type=int, default=1024)
    seq.add_argument("--threads", type=int, default=0)
    mem = parts.add_parser("memory", help="peak memory under --memory against an unbounded scan (ResNet-18 shape)")
    mem.add_argument("--images", type=int, default=32)
    mem.add_argument("--at", default="0,20,40")
    mem.add_argument("--memory", default="1G", help="the budget of the bounded scan")
    mem.add_argument("--sigmas", default="log:1e-2:1e4:5")
    mem.add_argument("--repeats", type=int, default=1)
    dep = parts.add_parser("deploy", help="a deployment-size sequential scan: time, memory, evaluations")
    dep.add_argument("--arch", choices=["resnet18", "transformer"], default="resnet18")
    dep.add_argument("--images", type=int, default=1000)
    dep.add_argument("--at", help="points walked (default: all)")
    dep.add_argument("--tolerance", type=float, default=0.05)
    bnd = parts.add_parser("bound", help="simulated curves: trials against the information bound, bias, coverage")
    bnd.add_argument("--runs", type=int, default=100)
    bnd.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()
    if args.part == "sequential" and args.arch != "digits" and args.n is None:
        args.n = 2000
    with tempfile.TemporaryDirectory(prefix="wn_scale_") as scratch:
        {"sequential": sequential_part, "memory": memory_part, "deploy": deploy_part, "bound": bound_part}[args.part](args, Path(scratch))


if __name__ == "__main__":
    main()
