"""The paper's Fashion-MNIST results reproduced by one command, and docs/reproduction.md written from them.

Trains the paper's networks (reference recipe: Adam 1e-3, cosine annealing, batch 128,
crop + flip; ``wn_onnx.training``) and scans them with ``wn_onnx.scan``:

* Table 4, Fashion-MNIST rows: MLP (100 epochs, the paper's length) and LeNet-5 (at increasing
  epochs, the longest this machine allows), with and without BatchNorm, global additive and
  multiplicative noise at inference, no noise after BatchNorm (as the paper's tables).
* Table 3 on Fashion-MNIST: uniform vs guided (inverse-μ) multi-execution at the global μ
  (``wn-onnx plan --evaluate``), one network per training seed.
* Fig. 2 (walking additive μ per point, inference-only and noise-trained at reduced cost) and
  Fig. 3 (walking multiplicative σ = 1e10 with BatchNorm).
* The multiplicative excess: global multiplicative μ as one factor at a time changes (training
  length, noise after BatchNorm, which points are noised, σ grid, the plateaus of the midpoint),
  on Fashion-MNIST and on the embedded digits model.

Every trained model and every scan is stored as it finishes under ``--out-dir`` (one JSON per
result, named by the hash of its settings), so a killed run resumes where it stopped and a run
with other settings never reuses a result. The document is generated from that store alone
(``--doc-only`` regenerates it without computing anything).

    python benchmarks/reproduce.py                  # the full run (about 1.5-2 h on one core)
    python benchmarks/reproduce.py --quick --out-dir /tmp/r --doc /tmp/r/reproduction.md
    python benchmarks/reproduce.py --doc-only       # docs/reproduction.md from the stored results
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks" / "results" / "reproduction"
DOC = ROOT / "docs" / "reproduction.md"
DATASET = "fashion-mnist"
CHANCE = 0.1

# docs/reference.md: the paper's Table 4 (inference only), Fashion-MNIST rows, and its Table 3
PAPER_T4 = {
    ("mlp", "add", True): 0.30, ("mlp", "add", False): 1.19, ("mlp", "mul", True): 0.25, ("mlp", "mul", False): 0.40,
    ("lenet5", "add", True): 0.09, ("lenet5", "add", False): 0.17, ("lenet5", "mul", True): 0.23,
    ("lenet5", "mul", False): 0.35,
}  # fmt: skip
PAPER_T3 = [  # dataset, model, BN, uniform, guided (accuracy %, mean ± s.d.)
    ("MNIST", "MLP", True, "71.4 ± 0.7", "80.6 ± 0.5"),
    ("MNIST", "MLP", False, "68.2 ± 1.3", "87.1 ± 0.7"),
    ("CIFAR-10", "MLP", True, "41.7 ± 0.5", "43.7 ± 0.5"),
    ("CIFAR-10", "MLP", False, "38.9 ± 0.6", "43.4 ± 0.7"),
    ("CIFAR-10", "LeNet-5", True, "58.5 ± 1.4", "61.1 ± 1.0"),
    ("CIFAR-10", "LeNet-5", False, "57.2 ± 1.8", "62.4 ± 1.3"),
]
# the paper's grids (docs/reference.md): additive 49 log values 1e-2 … 1e10; multiplicative 21
# linear 0 … 2 and 41 log 1 … 1e10. The "cut" grids keep their values up to 1e2, where every
# curve here is at its floor: the same σ at a fraction of the cost.
CUT_ADD = [float(v) for v in np.logspace(-2, 2, 17)]
CUT_MUL = sorted({*(float(v) for v in np.linspace(0, 2, 21)), *(float(v) for v in np.logspace(0, 2, 9))})


@dataclass
class Profile:
    """What one run computes; ``quick`` shrinks every number to a smoke run of a few minutes."""

    name: str = "full"
    mlp_epochs: int = 100
    lenet_epochs: tuple[int, ...] = (3, 10, 30, 100)
    lenet_detail_epochs: int = 30  # the LeNet-5 walked (Fig. 2, 3) and varied one factor at a time
    mlp_epoch_series: tuple[int, ...] = (3, 10, 30, 100)
    digits_epochs: tuple[int, ...] = (10, 60, 200)
    train_limit: int | None = None
    mlp_limit: int | None = None  # test images per global scan (None: all 10,000)
    lenet_limit: int | None = 5000
    walk_limit: int | None = 5000
    repeats: int = 5
    walk_repeats: int = 3
    add_grid: list = field(default_factory=lambda: CUT_ADD)
    mul_grid: list = field(default_factory=lambda: CUT_MUL)
    fig3_sigma: float = 1e10
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    plan_repeats: int = 20
    noisy_epochs: int = 3
    noisy_sigmas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)
    noisy_train_limit: int | None = None

    @classmethod
    def quick(cls) -> Profile:
        return cls(name="quick", mlp_epochs=1, lenet_epochs=(1, 2), lenet_detail_epochs=2, mlp_epoch_series=(1, 2), digits_epochs=(2, 5),
                   train_limit=1000, mlp_limit=300, lenet_limit=200, walk_limit=200, repeats=2, walk_repeats=2,
                   add_grid=[0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0], mul_grid=[0.0, 0.5, 1.0, 2.0, 10.0, 100.0],
                   seeds=(0, 1), plan_repeats=3, noisy_epochs=1, noisy_sigmas=(0.3, 3.0), noisy_train_limit=600)  # fmt: skip


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


class Store:
    """One JSON per result under ``root/<kind>/<name>-<hash>.json``: ``{"key": settings, "result": …}``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, kind: str, name: str, key: dict) -> Path:
        return self.root / kind / f"{name}-{key_hash(key)}.json"

    def get(self, kind: str, name: str, key: dict) -> dict | None:
        p = self.path(kind, name, key)
        if not p.is_file():
            return None
        record = json.loads(p.read_text())
        return record if record.get("key") == key else None

    def put(self, kind: str, name: str, key: dict, result: dict, seconds: float) -> dict:
        p = self.path(kind, name, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        record = {"key": key, "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "result": result}  # fmt: skip
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(p)
        return record


# ---------------------------------------------------------------------------------------------
# The settings of every result: the runner computes them, the document finds them by them.


def train_key(prof: Profile, arch: str, bn: bool, epochs: int, seed: int = 0, noise: str | None = None,
              sigma: float = 0.0, at: list[int] | None = None, dataset: str = DATASET) -> dict:  # fmt: skip
    limit = prof.noisy_train_limit if noise else prof.train_limit
    return {"arch": arch, "dataset": dataset, "bn": bn, "epochs": epochs, "seed": seed, "noise": noise,
            "sigma": sigma, "at": at, "train_limit": None if dataset == "digits" else limit}  # fmt: skip


def train_name(k: dict) -> str:
    noisy = f"-{k['noise']}{k['sigma']:g}at{'g' if k['at'] is None else k['at'][0]}" if k["noise"] else ""
    return f"{k['dataset']}-{k['arch']}-{'bn' if k['bn'] else 'nobn'}-e{k['epochs']}-s{k['seed']}{noisy}"


def scan_key(prof: Profile, model: dict | str, noise: str, *, mode: str = "global", grid: str | list = "cut",
             after_bn: bool = False, granularity: str = "layer", at: str | None = None, limit: int | str | None = "auto",
             repeats: int | None = None) -> dict:  # fmt: skip
    """``model``: a train key, or ``"embedded"`` (the digits model). ``grid``: ``cut`` (the paper's
    up to 1e2), ``paper`` (the tool's default: the paper's whole grid) or a list of σ."""
    arch = "mlp" if model == "embedded" else model["arch"]
    if limit == "auto":
        limit = None if model == "embedded" else (prof.walk_limit if mode != "global" else
                                                  prof.lenet_limit if arch == "lenet5" else prof.mlp_limit)  # fmt: skip
    if grid == "cut":
        grid = prof.add_grid if noise == "add" else prof.mul_grid
    return {"model": model, "noise": noise, "mode": mode, "grid": grid, "after_bn": after_bn,
            "granularity": granularity, "at": at, "limit": limit,
            "repeats": repeats or (prof.repeats if mode == "global" else prof.walk_repeats)}  # fmt: skip


def scan_name(k: dict) -> str:
    m = k["model"]
    base = "digits-embedded" if m == "embedded" else train_name(m)
    return f"{base}-{k['noise']}-{k['mode']}"


def plan_key(scan: dict, repeats: int) -> dict:
    return {"scan": scan, "repeats": repeats, "strategies": "uniform,inverse-mu", "sigma": "global-mu"}


def t4_models(prof: Profile) -> list[dict]:
    models = [train_key(prof, "mlp", bn, prof.mlp_epochs) for bn in (True, False)]
    return models + [train_key(prof, "lenet5", bn, e) for e in prof.lenet_epochs for bn in (True, False)]


def longest_lenet(prof: Profile, bn: bool) -> dict:
    return train_key(prof, "lenet5", bn, max(prof.lenet_epochs))


def detail_lenet(prof: Profile, bn: bool) -> dict:
    """The LeNet-5 of the walking scans, Fig. 3 and the one-factor checks."""
    return train_key(prof, "lenet5", bn, prof.lenet_detail_epochs)


def noisy_points(bn: bool) -> int:
    return 11 if bn else 8  # the MLP's points (docs/reference.md)


# ---------------------------------------------------------------------------------------------
# The runner


class Runner:
    def __init__(self, prof: Profile, store: Store, data_dir: Path | None, workers: int, threads: int):
        self.prof, self.store, self.data_dir, self.workers, self.threads = prof, store, data_dir, workers, threads
        self._splits: dict = {}
        self._test: dict = {}

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def split(self, dataset: str, limit: int | None):
        from wn_onnx.io.datasets import load_split

        if (dataset, limit) not in self._splits:
            self._splits[dataset, limit] = (load_split(dataset, "train", self.data_dir, limit=limit),
                                            load_split(dataset, "test", self.data_dir))  # fmt: skip
        return self._splits[dataset, limit]

    def model_path(self, k: dict) -> Path:
        return self.store.root / "models" / f"{train_name(k)}-{key_hash(k)}.onnx"

    def train(self, k: dict) -> dict:
        """The stored training record of ``k``; trains (resuming its checkpoint) when the record or
        its ONNX file is missing."""
        record = self.store.get("train", train_name(k), k)
        path = self.model_path(k)
        if record is not None and path.is_file():
            return record
        import torch

        from wn_onnx.noise import make_noise
        from wn_onnx.training.embedded import build as build_digits
        from wn_onnx.training.export import export_onnx
        from wn_onnx.training.trainer import TrainConfig, train

        torch.set_num_threads(self.threads)
        self.log(f"train {train_name(k)}")
        began = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        if k["dataset"] == "digits":  # the embedded default's recipe (wn_onnx.training.embedded)
            scratch = path.with_suffix("")
            model, _ = build_digits(scratch, k["epochs"], k["seed"])
            Path(model).replace(path)
            shutil.rmtree(scratch)
            history = []
        else:
            tr, te = self.split(k["dataset"], k["train_limit"])
            cfg = TrainConfig(k["arch"], k["dataset"], bn=k["bn"], epochs=k["epochs"], seed=k["seed"],
                              noise=make_noise(k["noise"]) if k["noise"] else None, sigma=k["sigma"], at=k["at"])  # fmt: skip
            ckpt = path.with_suffix(".ckpt")
            net, hist = train(cfg, (tr.x, tr.y), (te.x, te.y), 10, tuple(tr.x.shape[1:]), tr.info.mean, tr.info.std,
                              ckpt, ckpt.is_file())  # fmt: skip
            meta = {"arch": k["arch"], "dataset": k["dataset"], "bn": k["bn"], "class_names": tr.info.classes,
                    "normalization": {"mean": list(tr.info.mean), "std": list(tr.info.std)}, "epochs": k["epochs"],
                    "seed": k["seed"]}  # fmt: skip
            export_onnx(net, tuple(tr.x.shape[1:]), path, meta)
            ckpt.unlink(missing_ok=True)
            history = hist.epochs
        samples = len(self.split(k["dataset"], k["train_limit"])[1].x) if k["dataset"] != "digits" else None
        result = {"val_samples": samples, "history": history, "val_accuracy": history[-1]["val_accuracy"] if history else None,
                  "val_accuracy_noisy": history[-1].get("val_accuracy_noisy") if history else None}  # fmt: skip
        record = self.store.put("train", train_name(k), k, result, time.perf_counter() - began)
        self.log(f"  done in {record['seconds']:.0f} s, val accuracy {result['val_accuracy']}")
        return record

    def scan(self, k: dict) -> dict:
        name = scan_name(k)
        record = self.store.get("scan", name, k)
        if record is not None:
            return record
        import wn_onnx

        if k["model"] == "embedded" or k["model"]["dataset"] == "digits":  # the embedded split (seed 0)
            model = (
                wn_onnx.DEFAULT_MODEL
                if k["model"] == "embedded"
                else self.train(k["model"]) and self.model_path(k["model"])
            )
            data = wn_onnx.load_data(model, wn_onnx.DEFAULT_DATA, limit=k["limit"])
        else:
            self.train(k["model"])
            model = self.model_path(k["model"])
            data = wn_onnx.load_data(model, dataset=k["model"]["dataset"], split="test", data_dir=self.data_dir,
                                     limit=k["limit"])  # fmt: skip
        grid = "paper grid" if k["grid"] == "paper" else f"{len(k['grid'])} σ"
        self.log(f"scan {name} ({k['noise']}, {k['mode']}, after_bn={k['after_bn']}, at={k['at']}, {grid}, "
                 f"{len(data)} images)")  # fmt: skip
        began = time.perf_counter()
        report = wn_onnx.scan(str(model), data, noise=k["noise"], mode=k["mode"], sigmas=None if k["grid"] == "paper"
                              else k["grid"], repeats=k["repeats"], global_after_bn=k["after_bn"],
                              granularity=k["granularity"], at=k["at"], threads=self.threads, workers=self.workers)  # fmt: skip
        record = self.store.put("scan", name, k, report.to_json(), time.perf_counter() - began)
        g = record["result"].get("global") or {}
        self.log(f"  done in {record['seconds']:.0f} s, global μ {g.get('mu')}")
        return record

    def plan(self, scan_k: dict) -> dict:
        k = plan_key(scan_k, self.prof.plan_repeats)
        name = scan_name(scan_k)
        record = self.store.get("plan", name, k)
        if record is not None:
            return record
        scan = self.scan(scan_k)
        folder = self.store.root / "plan"
        folder.mkdir(parents=True, exist_ok=True)
        report_path = folder / f"{name}-{key_hash(k)}.report.tmp.json"
        report_path.write_text(json.dumps(scan["result"]))
        out = folder / f"{name}-{key_hash(k)}.plan.tmp.json"
        limit = [] if self.prof.mlp_limit is None else ["--limit", str(self.prof.mlp_limit)]
        cmd = [sys.executable, "-m", "wn_onnx", "plan", str(report_path), "--evaluate", "--strategies", k["strategies"],
               "--model", str(self.model_path(scan_k["model"])), "--dataset", DATASET, "--split", "test",
               "--repeats", str(k["repeats"]), "--threads", str(self.threads), "--quiet", "--out", str(out), *limit,
               *([] if self.data_dir is None else ["--data-dir", str(self.data_dir)])]  # fmt: skip
        self.log(f"plan {name} (uniform vs inverse-mu, {k['repeats']} draws)")
        began = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        out.unlink()
        report_path.unlink()
        record = self.store.put("plan", name, k, result, time.perf_counter() - began)
        plans = record["result"]["evaluation"]["plans"]
        self.log("  " + "; ".join(f"{s} {p['accuracy_mean']:.2%}" for s, p in plans.items()))
        return record


def jobs(prof: Profile) -> list[tuple[str, str, dict]]:
    """Every result of a run, in the order they are computed (most wanted first): (what, kind, key)."""
    out: list[tuple[str, str, dict]] = []
    # Table 4 (LeNet-5 trained longer than the walked one: last, the costliest trainings)
    late = [m for m in t4_models(prof) if m["arch"] == "lenet5" and m["epochs"] > prof.lenet_detail_epochs]
    for m in t4_models(prof):
        for noise in ("add", "mul"):
            if m not in late:
                out.append(("Table 4", "scan", scan_key(prof, m, noise)))
    # the multiplicative excess: training length (MLP), noise after BN, points, σ grid, digits
    for e in prof.mlp_epoch_series:
        for bn in (True, False):
            out.append(("excess: epochs", "scan", scan_key(prof, train_key(prof, "mlp", bn, e), "mul")))
            out.append(("Table 4 trend", "scan", scan_key(prof, train_key(prof, "mlp", bn, e), "add")))
    for m in (train_key(prof, "mlp", True, prof.mlp_epochs), detail_lenet(prof, True)):
        out.append(("excess: after BN", "scan", scan_key(prof, m, "mul", after_bn=True)))
    for m in (train_key(prof, "mlp", True, prof.mlp_epochs), train_key(prof, "mlp", False, prof.mlp_epochs)):
        for at in POINT_SETS[m["bn"]].values():
            if at is not None:
                out.append(("excess: points", "scan", scan_key(prof, m, "mul", at=at)))
        out.append(("excess: points", "scan", scan_key(prof, m, "mul", granularity="op")))
        out.append(("excess: grid", "scan", scan_key(prof, m, "mul", grid="paper")))
    for after_bn in (False, True):
        out.append(("excess: digits", "scan", scan_key(prof, "embedded", "mul", after_bn=after_bn)))
        out.append(("excess: digits", "scan", scan_key(prof, "embedded", "add", after_bn=after_bn)))
    out.append(("excess: digits", "scan", scan_key(prof, "embedded", "mul", grid="paper")))
    for e in prof.digits_epochs:
        out.append(("excess: digits", "scan", scan_key(prof, train_key(prof, "mlp", True, e, dataset="digits"), "mul")))
    # Fig. 3 and Fig. 2 (inference only)
    for m in (train_key(prof, "mlp", True, prof.mlp_epochs), detail_lenet(prof, True)):
        out.append(("Fig. 3", "scan", scan_key(prof, m, "mul", mode="walking", grid=[prof.fig3_sigma])))
    for arch, count in FIG3_POINTS.items():
        for at in range(count):
            out.append(("Fig. 3 noise-trained", "train", noisy_key(prof, True, at, prof.fig3_sigma, "mul", arch)))
    for bn in (True, False):
        out.append(("Fig. 2", "scan", fig2_key(prof, detail_lenet(prof, bn))))
    # Table 3, seed by seed (the walking scan of seed 0 is Fig. 2's MLP)
    for seed in prof.seeds[:3]:
        for bn in (True, False):
            out.append(("Table 3", "plan", fig2_key(prof, train_key(prof, "mlp", bn, prof.mlp_epochs, seed))))
    # Fig. 2, noise-trained MLPs (reduced), then the remaining seeds
    for bn in (True, False):
        for at in range(noisy_points(bn)):
            for s in prof.noisy_sigmas:
                out.append(("Fig. 2 noise-trained", "train", noisy_key(prof, bn, at, s)))
    for seed in prof.seeds[3:]:
        for bn in (True, False):
            out.append(("Table 3", "plan", fig2_key(prof, train_key(prof, "mlp", bn, prof.mlp_epochs, seed))))
    # the full paper grid on the longest LeNet-5 (the costliest check, last)
    out.append(("excess: grid", "scan", scan_key(prof, detail_lenet(prof, True), "mul", grid="paper")))
    out += [("Table 4", "scan", scan_key(prof, m, noise)) for m in late for noise in ("add", "mul")]
    return out


def fig2_key(prof: Profile, model: dict) -> dict:
    return scan_key(prof, model, "add", mode="both")


def noisy_key(prof: Profile, bn: bool, at: int, sigma: float, noise: str = "add", arch: str = "mlp") -> dict:
    return train_key(prof, arch, bn, prof.noisy_epochs, noise=noise, sigma=sigma, at=[at])


FIG3_POINTS = {"mlp": 11, "lenet5": 16}  # with BN (docs/reference.md)


# the MLP's point sets for the "which points" factor (indices as wn-onnx points numbers them)
POINT_SETS = {
    True: {"all 11 points": None, "no input point (1-10)": "1-10", "no logits point (0-9)": "0-9",
           "Gemm outputs only (1,4,7,10)": "1,4,7,10", "ReLU outputs only (3,6,9)": "3,6,9"},
    False: {"all 8 points": None, "no input point (1-7)": "1-7", "no logits point (0-6)": "0-6",
            "Gemm outputs only (1,3,5,7)": "1,3,5,7", "ReLU outputs only (2,4,6)": "2,4,6"},
}  # fmt: skip


def machine() -> dict:
    import onnxruntime
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": os.cpu_count(), "usable_cpus": usable, "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "numpy": np.__version__}  # fmt: skip


def run(prof: Profile, store: Store, args: argparse.Namespace) -> None:
    runner = Runner(prof, store, args.data_dir, args.workers, args.threads)
    todo = jobs(prof)
    began = time.perf_counter()
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        todo = [job for job in todo if any(job[0].startswith(w) for w in wanted)]
    for i, (what, kind, key) in enumerate(todo, 1):
        if args.budget and time.perf_counter() - began > args.budget * 60:
            runner.log(f"budget of {args.budget} min spent: stopping before job {i}/{len(todo)} ({what})")
            break
        try:
            getattr(runner, kind)(key)
        except Exception as error:  # one failed result must not lose the others; it is retried next run
            runner.log(f"FAILED {what} {kind}: {type(error).__name__}: {error}")
            if args.quick:
                raise


# ---------------------------------------------------------------------------------------------
# The document, from the store alone


def _mean_curve(curve: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(curve["sigmas"], float), np.asarray([np.mean(r) for r in curve["accuracy"]], float)


def crossing(curve: dict, level: float) -> float | None:
    """The first σ where the mean accuracy falls below ``level`` (linear interpolation in σ)."""
    s, a = _mean_curve(curve)
    below = np.nonzero(a < level)[0]
    if len(below) == 0 or below[0] == 0:
        return None
    i = below[0]
    return float(s[i - 1] + (a[i - 1] - level) / (a[i - 1] - a[i]) * (s[i] - s[i - 1]))


def fmt_mu(g: dict | None) -> str:
    if not g or g.get("mu") is None:
        return "—" if not g else f"— ({g.get('status')})"
    err = f" ± {g['mu_err']:.2g}" if g.get("mu_err") is not None else ""
    status = "" if g.get("status") == "ok" else f" ({g['status']})"
    return f"{g['mu']:.3g}{err}{status}"


class Doc:
    def __init__(self, prof: Profile, store: Store, fig_dir: Path):
        self.prof, self.store, self.fig_dir = prof, store, fig_dir
        self.lines: list[str] = []

    def scan(self, k: dict) -> dict | None:
        r = self.store.get("scan", scan_name(k), k)
        return r["result"] if r else None

    def trained(self, k: dict) -> dict | None:
        r = self.store.get("train", train_name(k), k)
        return r if r else None

    def w(self, *lines: str) -> None:
        self.lines.extend(lines)

    def figure(self, fig, name: str) -> Path:
        """Lay out ``fig``, write it as ``name`` (PNG) into the figure folder and close it."""
        fig.tight_layout()
        path = self.fig_dir / name
        fig.savefig(path, dpi=110)
        _plot().close(fig)
        return path

    def mu(self, k: dict) -> float | None:
        r = self.scan(k)
        return None if r is None or not r.get("global") else r["global"].get("mu")


def _ratio(ours: float | None, paper: float) -> str:
    return "—" if ours is None else f"{ours / paper:.2f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2%}"


def _model_label(k: dict) -> str:
    return f"{'MLP' if k['arch'] == 'mlp' else 'LeNet-5'}{' + BN' if k['bn'] else ''}, {k['epochs']} ep"


def write_doc(out_dir: Path, doc_path: Path, fig_dir: Path | None = None) -> Path:
    """docs/reproduction.md (or ``doc_path``) from the results stored under ``out_dir``: every
    number in it is read from the store, the figures are drawn from it."""
    store = Store(out_dir)
    meta = json.loads((out_dir / "run.json").read_text())
    prof = Profile(**{k: tuple(v) if isinstance(v, list) and k in TUPLES else v for k, v in meta["profile"].items()})
    fig_dir = fig_dir or doc_path.parent / doc_path.stem
    fig_dir.mkdir(parents=True, exist_ok=True)
    d = Doc(prof, store, fig_dir)
    rel = os.path.relpath(fig_dir, doc_path.parent)
    _head(d, meta)
    _glance(d)
    _table4(d, rel)
    _table3(d)
    _fig2(d, rel)
    _fig3(d, rel)
    _excess(d, rel)
    _runs(d, meta)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text("\n".join(d.lines).rstrip() + "\n")
    return doc_path


TUPLES = {"lenet_epochs", "mlp_epoch_series", "digits_epochs", "seeds", "noisy_sigmas"}


def _head(d: Doc, meta: dict) -> None:
    p = d.prof
    m = meta["machine"]
    scans = list((d.store.root / "scan").glob("*.json")) if (d.store.root / "scan").is_dir() else []
    trains = list((d.store.root / "train").glob("*.json")) if (d.store.root / "train").is_dir() else []
    d.w("# Reproduction of the paper on Fashion-MNIST",
        "",
        "<!-- generated by benchmarks/reproduce.py from the results under "
        f"{_repo_rel(d.store.root)}; do not edit by hand: rerun `python benchmarks/reproduce.py --doc-only` -->",
        "",
        "Every number and figure below is read from the stored results of `benchmarks/reproduce.py` "
        f"({len(trains)} trained networks, {len(scans)} scans). Paper values are those of docs/reference.md. "
        "Training follows the paper's recipe (Adam, lr 1e-3, cosine annealing over all epochs, batch 128, random "
        "crop (padding 4) and horizontal flip, normalisation (x − 0.5)/0.5); global noise in Tables 4 and 3 is "
        "injected at every point but the BatchNorm outputs, as in the paper's tables.",
        "",
        f"**Profile `{p.name}`.** Differences from the paper's protocol, all of them deliberate to fit "
        f"this machine ({_cpus(m)}, one thread per process):",
        "",
        f"- LeNet-5 trained {', '.join(map(str, p.lenet_epochs))} epochs, each length its own run (docs/reference.md: "
        "100 epochs for MLP/MNIST-style runs, 300 for LeNet-5/CIFAR-10), so the trend with training length is "
        f"visible; the MLP at the paper's {p.mlp_epochs} epochs. Walking scans and the one-factor checks use the "
        f"{p.lenet_detail_epochs}-epoch LeNet-5.",
        f"- σ grids: the paper's values up to σ = 100 ({len(p.add_grid)} additive, {len(p.mul_grid)} multiplicative); "
        f"the excess section compares the paper's whole grid to 1e10. {_floor_note(d)}",
        f"- Test images per global scan: {p.mlp_limit or 'all 10,000'} (MLP), {p.lenet_limit or 'all 10,000'} "
        f"(LeNet-5, class-stratified); {p.repeats} noise draws per σ. Walking scans: {p.walk_limit or 'all'} images, "
        f"{p.walk_repeats} draws.",
        f"- Training set: {p.train_limit or 'all 60,000'} images.",
        "")  # fmt: skip


def _floor_note(d: Doc) -> str:
    """How far the stored whole-grid curves move beyond σ = 100 (what the cut grids leave out), up to
    the σ where the outputs overflow float32 (NaN/Inf predictions count as wrong: docs/method.md)."""
    folder = d.store.root / "scan"
    moves, overflow = [], []
    for f in folder.glob("*.json") if folder.is_dir() else []:
        rec = json.loads(f.read_text())
        g = rec["result"].get("global")
        if rec["key"]["grid"] != "paper" or not g:
            continue
        s, a = _mean_curve(g)
        bad = np.asarray([np.sum(r) for r in g.get("nonfinite", [[0]] * len(s))]) > 0
        beyond = (s > 100) & ~bad
        if beyond.any() and (s <= 100).any():
            moves.append(float(np.max(np.abs(a[beyond] - a[s <= 100][-1]))))
        if bad.any():
            overflow.append((float(s[np.argmax(bad)]), float(s[np.argmax(a == 0)]) if (a == 0).any() else None))
    if not moves:
        return ""
    note = (f"On the {len(moves)} whole-grid scans stored, the mean accuracy beyond σ = 100 stays within "
            f"{100 * max(moves):.1f} points of its value at σ = 100")  # fmt: skip
    if overflow:
        zero = [z for _, z in overflow if z is not None]
        note += (f", σ where no output overflows float32 (the first NaN/Inf predictions, counted as wrong, appear "
                 f"from σ = {min(o for o, _ in overflow):.0e}"
                 + (f"; all predictions are NaN/Inf from σ = {min(zero):.0e} on" if zero else "") + ")")  # fmt: skip
    return note + "."


def _glance(d: Doc) -> None:
    """The headline numbers, computed from the tables below."""
    p = d.prof
    lines = []
    for arch, epochs in (("mlp", p.mlp_epochs), ("lenet5", max(p.lenet_epochs))):
        cells = []
        for noise in ("add", "mul"):
            for bn in (True, False):
                mu = d.mu(scan_key(p, train_key(p, arch, bn, epochs), noise))
                if mu is not None:
                    cells.append(f"{noise} {'BN' if bn else 'no BN'} {mu / PAPER_T4[arch, noise, bn]:.2f}")
        if cells:
            name = "MLP" if arch == "mlp" else "LeNet-5"
            lines.append(f"- Table 4, {name} ({epochs} epochs): ours / paper = {'; '.join(cells)}.")
    for arch, epochs in (("mlp", p.mlp_epoch_series), ("lenet5", p.lenet_epochs)):
        for bn in (True, False):
            first, last = (d.mu(scan_key(p, train_key(p, arch, bn, e), "mul")) for e in (min(epochs), max(epochs)))
            if first is not None and last is not None and min(epochs) != max(epochs):
                paper = PAPER_T4[arch, "mul", bn]
                lines.append(f"- Multiplicative μ, {'MLP' if arch == 'mlp' else 'LeNet-5'}{' + BN' if bn else ''}: "
                             f"{first / paper:.2f}× the paper after {min(epochs)} epochs, {last / paper:.2f}× after "
                             f"{max(epochs)}.")  # fmt: skip
    for bn in (True, False):
        diffs = []
        for seed in p.seeds:
            sk = fig2_key(p, train_key(p, "mlp", bn, p.mlp_epochs, seed))
            rec = d.store.get("plan", scan_name(sk), plan_key(sk, p.plan_repeats))
            if rec:
                plans = rec["result"]["evaluation"]["plans"]
                diffs.append(plans["inverse-mu"]["accuracy_mean"] - plans["uniform"]["accuracy_mean"])
        if diffs:
            lines.append(f"- Table 3, MLP{' + BN' if bn else ''}: guided − uniform = {100 * np.mean(diffs):+.1f} points "
                         f"(mean of {len(diffs)} seed{'s' if len(diffs) > 1 else ''}; guided better in "
                         f"{sum(x > 0 for x in diffs)}).")  # fmt: skip
    if lines:
        d.w("**At a glance** (from the tables below):", "", *lines, "")


def _cpus(m: dict) -> str:
    usable = m.get("usable_cpus")
    return f"{m['cpus']} CPUs" + (f", {usable} usable by this process" if usable and usable != m["cpus"] else "")


def _repo_rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _table4(d: Doc, rel: str) -> None:
    p = d.prof
    d.w("## Table 4: global μ at inference, Fashion-MNIST", "",
        "| model | BN | epochs | clean acc. | noise | paper μ | ours μ (± fit error) | ours / paper |",
        "|---|---|---|---|---|---|---|---|")  # fmt: skip
    for m in t4_models(p):
        for noise in ("add", "mul"):
            r = d.scan(scan_key(p, m, noise))
            paper = PAPER_T4[m["arch"], noise, m["bn"]]
            g = r["global"] if r else None
            clean = _pct(r["clean_accuracy"]) if r else "—"
            arch = "MLP" if m["arch"] == "mlp" else "LeNet-5"
            d.w(f"| {arch} | {'yes' if m['bn'] else 'no'} | {m['epochs']} | {clean} | {noise} | {paper} | "
                f"{fmt_mu(g)} | {_ratio(g and g.get('mu'), paper)} |")  # fmt: skip
    d.w("", "μ is the tool's fitted midpoint (docs/method.md); \"clean acc.\" the noise-free accuracy on the "
        "scanned test images. The ratio column is the reproduction's headline: 1.00 is the paper's value.", "")  # fmt: skip
    rows = []
    for noise in ("add", "mul"):
        for bn in (True, False):
            mus = [(e, d.mu(scan_key(p, train_key(p, "lenet5", bn, e), noise))) for e in p.lenet_epochs]
            rows.append(f"| {noise} | {'yes' if bn else 'no'} | " + " | ".join("—" if v is None else f"{v:.3g}" for _, v in mus)
                        + f" | {PAPER_T4['lenet5', noise, bn]} |")  # fmt: skip
    d.w("LeNet-5's μ against training length (the trend the paper's 300 epochs extend):", "",
        "| noise | BN | " + " | ".join(f"{e} epochs" for e in p.lenet_epochs) + " | paper |",
        "|---|---|" + "---|" * len(p.lenet_epochs) + "---|", *rows, "")  # fmt: skip
    hist = []
    for bn in (True, False):
        t = d.trained(longest_lenet(p, bn))
        if t and t["result"]["history"]:
            h = t["result"]["history"]
            picks = sorted({0, len(h) // 4, len(h) // 2, 3 * len(h) // 4, len(h) - 1})
            hist.append(f"| LeNet-5{' + BN' if bn else ''} | " + ", ".join(f"{h[i]['epoch']}: {h[i]['val_accuracy']:.2%}" for i in picks)
                        + f" | {t['seconds'] / 60:.1f} min |")  # fmt: skip
        t = d.trained(train_key(p, "mlp", bn, p.mlp_epochs))
        if t and t["result"]["history"]:
            h = t["result"]["history"]
            picks = sorted({0, len(h) // 4, len(h) // 2, 3 * len(h) // 4, len(h) - 1})
            hist.append(f"| MLP{' + BN' if bn else ''} | " + ", ".join(f"{h[i]['epoch']}: {h[i]['val_accuracy']:.2%}" for i in picks)
                        + f" | {t['seconds'] / 60:.1f} min |")  # fmt: skip
    _trend_figures(d, rel)
    if hist:
        d.w("Validation accuracy during the longest trainings (epoch: accuracy on the 10,000 test images; the "
            "cosine schedule anneals to zero at the last epoch, so each length is its own run):", "",
            "| network | validation curve | training time |", "|---|---|---|", *hist, "")  # fmt: skip


def _trend_figures(d: Doc, rel: str) -> None:
    """μ against training length (every stored length) and the validation curves of the longest runs."""
    p = d.prof
    series = {"mlp": p.mlp_epoch_series, "lenet5": p.lenet_epochs}
    got = []
    for arch, epochs in series.items():
        for bn in (True, False):
            for noise in ("add", "mul"):
                pts = [(e, d.mu(scan_key(p, train_key(p, arch, bn, e), noise))) for e in epochs]
                pts = [(e, mu) for e, mu in pts if mu is not None]
                if pts:
                    got.append((arch, bn, noise, pts))
    if not got:
        return
    plt = _plot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, noise in zip(axes, ("add", "mul"), strict=True):
        for arch, bn, kind, pts in got:
            if kind != noise:
                continue
            label = f"{'MLP' if arch == 'mlp' else 'LeNet-5'}{' + BN' if bn else ''}"
            (line,) = ax.plot([e for e, _ in pts], [mu for _, mu in pts], "o-", label=label)
            ax.axhline(PAPER_T4[arch, noise, bn], color=line.get_color(), ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training epochs (each its own cosine schedule)")
        ax.set_ylabel(f"global {'additive' if noise == 'add' else 'multiplicative'} μ")
        ax.set_title(f"{'additive' if noise == 'add' else 'multiplicative'} noise; dotted: the paper's μ")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    path = d.figure(fig, "mu_vs_epochs.png")
    d.w(f"![μ against training length]({rel}/{path.name})", "")
    curves = []
    for arch, epochs in (("mlp", p.mlp_epochs), ("lenet5", max(p.lenet_epochs))):
        for bn in (True, False):
            t = d.trained(train_key(p, arch, bn, epochs))
            if t and t["result"]["history"]:
                curves.append((f"{'MLP' if arch == 'mlp' else 'LeNet-5'}{' + BN' if bn else ''}, {epochs} ep",
                               t["result"]["history"]))  # fmt: skip
    if curves:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for label, h in curves:
            ax.plot([e["epoch"] for e in h], [e["val_accuracy"] for e in h], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (clean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = d.figure(fig, "training_curves.png")
        d.w(f"![validation curves]({rel}/{path.name})", "")


def _table3(d: Doc) -> None:
    p = d.prof
    d.w("## Table 3: guided multi-execution, Fashion-MNIST MLP", "",
        "Per training seed: a walking + global additive scan (walking μ per point), then `wn-onnx plan "
        f"--evaluate` of the uniform plan (2 executions per point) and the guided one (executions ∝ 1/μ, same total) "
        f"under global additive noise at that network's global μ (noise at every point, BN outputs included, as the "
        f"paper's 11-entry plans), {p.plan_repeats} draws per plan, the same draws for both.", "")  # fmt: skip
    rows, summary = [], []
    for bn in (True, False):
        uni, gui = [], []
        for seed in p.seeds:
            sk = fig2_key(p, train_key(p, "mlp", bn, p.mlp_epochs, seed))
            rec = d.store.get("plan", scan_name(sk), plan_key(sk, p.plan_repeats))
            if rec is None:
                continue
            ev = rec["result"]["evaluation"]
            u, g = ev["plans"]["uniform"], ev["plans"]["inverse-mu"]
            uni.append(u["accuracy_mean"])
            gui.append(g["accuracy_mean"])
            scan = d.scan(sk)
            rows.append(f"| {'yes' if bn else 'no'} | {seed} | {_pct(scan['clean_accuracy'])} | {ev['sigma']:.3g} | "
                        f"{{{','.join(map(str, u['executions']))}}} | {{{','.join(map(str, g['executions']))}}} | "
                        f"{u['accuracy_mean']:.1%} ± {u['accuracy_std']:.1%} | {g['accuracy_mean']:.1%} ± {g['accuracy_std']:.1%} |")  # fmt: skip
        if uni:
            sd = lambda v: f" ± {100 * np.std(v, ddof=1):.1f}" if len(v) > 1 else ""  # noqa: E731
            diff = np.asarray(gui) - np.asarray(uni)
            summary.append(f"| Fashion-MNIST (ours, {len(uni)} seed{'s' if len(uni) > 1 else ''}) | MLP | "
                           f"{'with' if bn else 'without'} | {100 * np.mean(uni):.1f}{sd(uni)} % | "
                           f"{100 * np.mean(gui):.1f}{sd(gui)} % | {100 * np.mean(diff):+.1f} (guided better in "
                           f"{int(np.sum(diff > 0))}/{len(diff)}) |")  # fmt: skip
    d.w("| dataset | model | BN | uniform | guided | guided − uniform (points) |", "|---|---|---|---|---|---|",
        *summary, *(f"| {ds} (paper) | {m} | {'with' if bn else 'without'} | {u} % | {g} % | "
                    f"{float(g.split()[0]) - float(u.split()[0]):+.1f} |" for ds, m, bn, u, g in PAPER_T3), "")  # fmt: skip
    d.w("Ours: mean ± s.d. over training seeds of each network's mean accuracy. The paper's ± is its own "
        "spread (docs/reference.md); its rows are MNIST and CIFAR-10, shown for the shape of the effect.", "",
        "Per seed (accuracy: mean ± s.d. over the draws):", "",
        "| BN | seed | clean | σ = global μ | uniform plan | guided plan | uniform | guided |",
        "|---|---|---|---|---|---|---|---|", *rows, "")  # fmt: skip


def _plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fig2(d: Doc, rel: str) -> None:
    p = d.prof
    from wn_onnx import fit_curve

    series = {}
    for bn in (True, False):
        for m in (train_key(p, "mlp", bn, p.mlp_epochs), detail_lenet(p, bn)):
            r = d.scan(fig2_key(p, m))
            if r:
                series[_model_label(m)] = [(q["index"], q.get("mu"), q["op_type"], q["status"]) for q in r["points"]]
    noisy = {}
    for bn in (True, False):
        mus = []
        for at in range(noisy_points(bn)):
            acc = []
            for s in p.noisy_sigmas:
                t = d.trained(noisy_key(p, bn, at, s))
                if t is None or t["result"]["val_accuracy_noisy"] is None:
                    break
                acc.append(t["result"]["val_accuracy_noisy"])
                samples = t["result"].get("val_samples") or 10000
            if len(acc) == len(p.noisy_sigmas):
                c = fit_curve(list(p.noisy_sigmas), acc, chance=CHANCE, n_samples=samples, shared_draws=False)
                mus.append((at, c.mu, "", c.status))
        if mus:
            noisy[f"MLP{' + BN' if bn else ''}, noise-trained ({p.noisy_epochs} ep)"] = mus
    d.w("## Fig. 2: walking additive noise, μ per point", "")
    if not series:
        d.w("(no walking scans stored yet)", "")
        return
    plt = _plot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, bn in zip(axes, (True, False), strict=True):
        for label, pts in {**series, **noisy}.items():
            if ("+ BN" in label) != bn:
                continue
            xs = [i for i, mu, *_ in pts if mu is not None]
            ax.plot(
                xs,
                [mu for _, mu, *_ in pts if mu is not None],
                "o-" if "noise-trained" not in label else "s--",
                label=label,
            )
        ax.set_yscale("log")
        ax.set_xlabel("point index")
        ax.set_title("with BatchNorm" if bn else "without BatchNorm")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("walking μ (additive σ)")
    path = d.figure(fig, "fig2_walking_additive.png")
    d.w(f"![Fig. 2]({rel}/{path.name})", "",
        f"Inference-only: walking scans of the MLP ({p.mlp_epochs} epochs) and LeNet-5 ({p.lenet_detail_epochs} epochs), "
        f"{p.walk_limit or 'all'} test images, {p.walk_repeats} draws, σ grid of {len(p.add_grid)} values. "
        "Noise-trained (reduced cost, MLP only; the paper: LeNet-5/CIFAR-10, full training at every σ of its "
        f"grid, with and without clamping): one MLP per (point, σ) trained {p.noisy_epochs} epochs with additive noise "
        f"at that point only, σ ∈ {{{', '.join(f'{s:g}' for s in p.noisy_sigmas)}}}, evaluated under the same noise "
        "(one draw on the test images) and μ fitted to those "
        f"{len(p.noisy_sigmas)} accuracies; no clamped variant.", "")  # fmt: skip
    table = []
    for label, pts in {**series, **noisy}.items():
        table.append(f"| {label} | " + ", ".join(f"{i}: {_point_mu(mu, status)}" for i, mu, _, status in pts) + " |")
    d.w("| network | μ per point (index: μ) |", "|---|---|", *table, "",
        "\"≥\": accuracy had not fallen to the midpoint at the grid's largest σ (a lower bound); \"~\": the drop is only "
        "bracketed by the grid or poorly fitted (README, \"Statuses\"). The figure plots the values as they are.", "")  # fmt: skip
    for label, pts in series.items():
        known = sorted((mu, i, op) for i, mu, op, _ in pts if mu is not None)
        if known:
            d.w(f"- {label}: least robust points {', '.join(f'{i} ({op}, {mu:.3g})' for mu, i, op in known[:3])}; "
                f"most robust {', '.join(f'{i} ({op}, {mu:.3g})' for mu, i, op in known[::-1][:3])}.")  # fmt: skip
    d.w("")
    if series:
        d.w("Point order (MLP): 0 input, then Gemm, BatchNorm (with BN), ReLU per hidden layer, and the logits.", "")


def _point_mu(mu: float | None, status: str) -> str:
    """μ with its status's meaning: ≥ a lower bound (not-reached), ≤ an upper bound, ~ not a resolved fit."""
    if mu is None:
        return f"— ({status})"
    mark = {"not-reached": "≥ ", "no-drop-from-start": "≤ ", "ok": "", "two-drops": ""}.get(status, "~")
    return f"{mark}{mu:.3g}"


def _fig3(d: Doc, rel: str) -> None:
    p = d.prof
    d.w(f"## Fig. 3: walking multiplicative noise at σ = {p.fig3_sigma:g}, with BatchNorm", "")
    got = {}
    for m in (train_key(p, "mlp", True, p.mlp_epochs), detail_lenet(p, True)):
        r = d.scan(scan_key(p, m, "mul", mode="walking", grid=[p.fig3_sigma]))
        trained = []
        for at in range(FIG3_POINTS[m["arch"]]):
            t = d.trained(noisy_key(p, True, at, p.fig3_sigma, "mul", m["arch"]))
            trained.append(None if t is None else t["result"]["val_accuracy_noisy"])
        if r or any(a is not None for a in trained):
            inference = (
                {q["index"]: (q["op_type"], float(np.mean(q["accuracy"][-1]))) for q in r["points"]} if r else {}
            )
            got[m["arch"]] = (m, r["clean_accuracy"] if r else None, inference, trained)
    if not got:
        d.w("(no results stored yet)", "")
        return
    plt = _plot()
    fig, axes = plt.subplots(1, len(got), figsize=(6 * len(got), 3.8), squeeze=False)
    for ax, (m, clean, inference, trained) in zip(axes[0], got.values(), strict=True):
        idx = np.arange(len(trained))
        ax.bar(idx - 0.2, [inference.get(i, ("", np.nan))[1] for i in idx], 0.4, color="tab:orange",
               label=f"inference only ({_model_label(m)})")  # fmt: skip
        ax.bar(idx + 0.2, [np.nan if a is None else a for a in trained], 0.4, color="tab:green",
               label=f"noise-trained at that point ({p.noisy_epochs} ep)")  # fmt: skip
        if clean is not None:
            ax.axhline(clean, color="tab:blue", label=f"clean {clean:.1%}")
        ax.axhline(CHANCE, color="grey", ls=":", label="chance")
        ax.set_xticks(idx, [f"{i}\n{inference.get(i, ('?',))[0][:4]}" for i in idx], fontsize=7)
        ax.set_ylim(0, 1.35)
        ax.set_title(f"{'MLP' if m['arch'] == 'mlp' else 'LeNet-5'} + BN, Fashion-MNIST")
        ax.legend(fontsize=7, loc="upper right", framealpha=0.95)
    axes[0][0].set_ylabel(f"accuracy, σ_mul = {p.fig3_sigma:g} at one point")
    path = d.figure(fig, "fig3_multiplicative_bn.png")
    d.w(f"![Fig. 3]({rel}/{path.name})", "")
    for m, clean, inference, trained in got.values():
        name = "MLP" if m["arch"] == "mlp" else "LeNet-5"
        if inference:
            low = [i for i, (_, a) in inference.items() if a < clean - 0.10]
            d.w(f"- {name} + BN, inference only ({m['epochs']} ep, clean {clean:.1%}): {len(inference) - len(low)} of "
                f"{len(inference)} points keep the accuracy within 10 points of clean.")  # fmt: skip
        done = [(i, a) for i, a in enumerate(trained) if a is not None]
        if done:
            ref = max(a for _, a in done)
            fallen = [f"{i} ({inference.get(i, ('?',))[0]}, {a:.1%})" for i, a in done if a < 0.5 * (ref + CHANCE)]
            d.w(f"- {name} + BN, noise-trained at each point: accuracy {min(a for _, a in done):.1%}–{ref:.1%} over "
                f"{len(done)} points; below the midpoint between the best and chance: {', '.join(fallen) or 'none'}.")  # fmt: skip
    d.w("", f"Inference only: the trained networks of Table 4, {p.walk_limit or 'all'} test images, {p.walk_repeats} "
        "draws. Noise-trained (the paper's Fig. 3, reduced): one network per point trained "
        f"{p.noisy_epochs} epochs (the paper: full length) with multiplicative noise σ = {p.fig3_sigma:g} at that point "
        "only, evaluated under the same noise (one draw on the test images).", "")  # fmt: skip


def _excess(d: Doc, rel: str) -> None:
    p = d.prof
    d.w("## The multiplicative excess explained?", "",
        "Global multiplicative μ with one factor changed at a time from the Table 4 setting (cut grid, no noise "
        "after BatchNorm, every point of the layer granularity). \"Δ\" is the change against that setting.", "")  # fmt: skip
    rows = []

    def row(factor: str, setting: str, k: dict, base: dict | None, paper: float | None) -> None:
        r = d.scan(k)
        mu = d.mu(k)
        b = d.mu(base) if base is not None else None
        delta = "" if b is None or mu is None or k == base else f"{(mu / b - 1):+.0%}"
        clean = _pct(r["clean_accuracy"]) if r else "—"
        rows.append(f"| {factor} | {setting} | {clean} | {fmt_mu(r['global'] if r else None)} | {delta or '—'} | "
                    f"{paper if paper is not None else '—'} | {_ratio(mu, paper) if paper else '—'} |")  # fmt: skip

    for bn in (True, False):
        base = scan_key(p, train_key(p, "mlp", bn, p.mlp_epochs), "mul")
        paper = PAPER_T4["mlp", "mul", bn]
        tag = f"MLP{' + BN' if bn else ''}"
        for e in p.mlp_epoch_series:
            row("training length", f"{tag}, {e} epochs", scan_key(p, train_key(p, "mlp", bn, e), "mul"), base, paper)
        if bn:
            row(
                "noise after BN",
                f"{tag}, noise after BN too",
                scan_key(p, base["model"], "mul", after_bn=True),
                base,
                paper,
            )
        for label, at in POINT_SETS[bn].items():
            if at is not None:
                row("points", f"{tag}, {label}", scan_key(p, base["model"], "mul", at=at), base, paper)
        row("points", f"{tag}, granularity op", scan_key(p, base["model"], "mul", granularity="op"), base, paper)
        row(
            "σ grid",
            f"{tag}, the paper's whole grid (62 σ to 1e10)",
            scan_key(p, base["model"], "mul", grid="paper"),
            base,
            paper,
        )
    for bn in (True, False):
        base = scan_key(p, longest_lenet(p, bn), "mul")
        for e in p.lenet_epochs:
            row("training length", f"LeNet-5{' + BN' if bn else ''}, {e} epochs",
                scan_key(p, train_key(p, "lenet5", bn, e), "mul"), base, PAPER_T4["lenet5", "mul", bn])  # fmt: skip
    base = scan_key(p, detail_lenet(p, True), "mul")
    row("noise after BN", f"LeNet-5 + BN, {p.lenet_detail_epochs} ep, noise after BN too",
        scan_key(p, base["model"], "mul", after_bn=True), base, PAPER_T4["lenet5", "mul", True])  # fmt: skip
    row("σ grid", f"LeNet-5 + BN, {p.lenet_detail_epochs} ep, the paper's whole grid",
        scan_key(p, base["model"], "mul", grid="paper"), base, PAPER_T4["lenet5", "mul", True])  # fmt: skip
    dbase = scan_key(p, "embedded", "mul")
    row("noise after BN", "digits MLP + BN (embedded, 60 ep)", dbase, dbase, None)
    row("noise after BN", "digits, noise after BN too", scan_key(p, "embedded", "mul", after_bn=True), dbase, None)
    row("σ grid", "digits, the paper's whole grid", scan_key(p, "embedded", "mul", grid="paper"), dbase, None)
    for e in p.digits_epochs:
        row("training length", f"digits MLP + BN retrained, {e} epochs",
            scan_key(p, train_key(p, "mlp", True, e, dataset="digits"), "mul"), dbase, None)  # fmt: skip
    d.w("| factor | setting | clean acc. | global mul μ | Δ | paper | ours / paper |", "|---|---|---|---|---|---|---|",
        *rows, "")  # fmt: skip
    _plateaus(d)
    _excess_figure(d, rel)
    _excess_summary(d)
    _reading(d)


def _plateaus(d: Doc) -> None:
    """The midpoint's plateaus, read off the stored Table 4 curves: the fitted μ, the crossing of the
    midpoint between the measured plateaus, and the crossing of (clean + chance)/2."""
    p = d.prof
    rows = []
    for m in t4_models(p):
        if m["arch"] == "lenet5" and m["epochs"] != max(p.lenet_epochs):
            continue
        r = d.scan(scan_key(p, m, "mul"))
        if not r:
            continue
        g = r["global"]
        paper = PAPER_T4[m["arch"], "mul", m["bn"]]
        half_clean = crossing(g, (r["clean_accuracy"] + CHANCE) / 2)
        a_min = g.get("a_min")
        rows.append(f"| {_model_label(m)} | {_pct(g.get('a_max'))} | {_pct(a_min)} | {fmt_mu(g)} | "
                    f"{'—' if half_clean is None else f'{half_clean:.3g}'} | {paper} | "
                    f"{_ratio(half_clean, paper)} |")  # fmt: skip
    d.w("**The plateaus of the midpoint.** μ is where the curve is halfway between its plateaus; "
        "if the paper's fit read a lower top plateau or a higher floor, its μ would differ. The same stored "
        "curves, read three ways:", "",
        "| network | a_max (fit) | a_min (fit) | fitted μ | crossing of (clean + chance)/2 | paper | crossing / paper |",
        "|---|---|---|---|---|---|---|", *rows, "")  # fmt: skip


def _excess_figure(d: Doc, rel: str) -> None:
    p = d.prof
    curves = []
    for bn in (True, False):
        for e in p.mlp_epoch_series:
            r = d.scan(scan_key(p, train_key(p, "mlp", bn, e), "mul"))
            if r:
                curves.append((f"MLP{' + BN' if bn else ''}, {e} ep", bn, r["global"]))
        r = d.scan(scan_key(p, longest_lenet(p, bn), "mul"))
        if r:
            curves.append((f"LeNet-5{' + BN' if bn else ''}, {max(p.lenet_epochs)} ep", bn, r["global"]))
    if not curves:
        return
    plt = _plot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, bn in zip(axes, (True, False), strict=True):
        for label, b, g in curves:
            if b != bn:
                continue
            s, a = _mean_curve(g)
            keep = s <= 2.0
            (line,) = ax.plot(s[keep], a[keep], label=label)
            if g.get("mu") is not None and g["mu"] <= 2:
                ax.axvline(g["mu"], color=line.get_color(), ls=":", lw=0.8)
        ax.axvline(PAPER_T4["mlp", "mul", bn], color="black", lw=1.5, label="paper μ, MLP")
        ax.axvline(PAPER_T4["lenet5", "mul", bn], color="black", ls="--", lw=1.5, label="paper μ, LeNet-5")
        ax.set_xlabel("global multiplicative σ")
        ax.set_title("with BatchNorm" if bn else "without BatchNorm")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy (mean over draws)")
    path = d.figure(fig, "global_multiplicative_curves.png")
    d.w(f"![global multiplicative curves]({rel}/{path.name})", "",
        "The stored global multiplicative curves (σ ≤ 2); dotted: each curve's fitted μ; black: the paper's μ.", "")  # fmt: skip


def _excess_summary(d: Doc) -> None:
    """Each factor's largest move of global mul μ, computed from the rows above."""
    p = d.prof
    moves: dict[str, list[float]] = {}

    def add(factor: str, k: dict, base: dict) -> None:
        a, b = d.mu(k), d.mu(base)
        if a is not None and b is not None and k != base:
            moves.setdefault(factor, []).append(a / b - 1)

    for bn in (True, False):
        base = scan_key(p, train_key(p, "mlp", bn, p.mlp_epochs), "mul")
        for e in p.mlp_epoch_series:
            add("training length (MLP, vs the longest)", scan_key(p, train_key(p, "mlp", bn, e), "mul"), base)
        for at in POINT_SETS[bn].values():
            if at is not None:
                add("which points are noised (MLP)", scan_key(p, base["model"], "mul", at=at), base)
        add("granularity op vs layer (MLP)", scan_key(p, base["model"], "mul", granularity="op"), base)
        add("σ grid: the paper's whole grid", scan_key(p, base["model"], "mul", grid="paper"), base)
        lbase = scan_key(p, longest_lenet(p, bn), "mul")
        for e in p.lenet_epochs:
            add("training length (LeNet-5, vs the longest)", scan_key(p, train_key(p, "lenet5", bn, e), "mul"), lbase)
    for m in (train_key(p, "mlp", True, p.mlp_epochs), detail_lenet(p, True)):
        add("noise after BN as well", scan_key(p, m, "mul", after_bn=True), scan_key(p, m, "mul"))
    lb = scan_key(p, detail_lenet(p, True), "mul")
    add("σ grid: the paper's whole grid", scan_key(p, lb["model"], "mul", grid="paper"), lb)
    db = scan_key(p, "embedded", "mul")
    add("noise after BN as well", scan_key(p, "embedded", "mul", after_bn=True), db)
    add("σ grid: the paper's whole grid", scan_key(p, "embedded", "mul", grid="paper"), db)
    for e in p.digits_epochs:
        add(
            "training length (digits, vs the embedded 60 ep)",
            scan_key(p, train_key(p, "mlp", True, e, dataset="digits"), "mul"),
            db,
        )
    rows = [f"| {f} | {len(v)} | {min(v):+.0%} … {max(v):+.0%} |" for f, v in moves.items()]
    ratios = []
    for m in t4_models(p):
        if m["arch"] == "mlp" or m["epochs"] == max(p.lenet_epochs):
            mu = d.mu(scan_key(p, m, "mul"))
            if mu is not None:
                ratios.append(mu / PAPER_T4[m["arch"], "mul", m["bn"]])
    d.w("**Summary: how far each factor moves global multiplicative μ** (range of μ/μ_base − 1 over the "
        "settings measured):", "", "| factor | settings | move of μ |", "|---|---|---|", *rows, "")  # fmt: skip
    if moves:
        ranked = sorted(moves.items(), key=lambda kv: -max(abs(v) for v in kv[1]))
        d.w("Ranked by the largest move: " + "; ".join(f"{f} {max(v, key=abs):+.0%}" for f, v in ranked) + ".", "")
    if ratios:
        d.w(f"Against the paper, our Table 4 multiplicative μ (MLP at {p.mlp_epochs} epochs, LeNet-5 at "
            f"{max(p.lenet_epochs)}) is {min(ratios):.2f}–{max(ratios):.2f}× the paper's value.", "")  # fmt: skip


def _reading(d: Doc) -> None:
    """What the measurements say about the excess, each number read from the store."""
    p = d.prof
    out = []

    def clean(k: dict) -> float | None:
        r = d.scan(k)
        return None if r is None else r["clean_accuracy"]

    for arch, epochs in (("mlp", p.mlp_epoch_series), ("lenet5", p.lenet_epochs)):
        for bn in (True, False):
            ks = [scan_key(p, train_key(p, arch, bn, e), "mul") for e in (min(epochs), max(epochs))]
            mus, cl = [d.mu(k) for k in ks], [clean(k) for k in ks]
            if None in mus or None in cl or min(epochs) == max(epochs):
                continue
            paper = PAPER_T4[arch, "mul", bn]
            out.append(f"{'MLP' if arch == 'mlp' else 'LeNet-5'}{' + BN' if bn else ''} {mus[0] / paper:.2f}× → "
                       f"{mus[1] / paper:.2f}× the paper from {min(epochs)} to {max(epochs)} epochs (clean "
                       f"{cl[0]:.1%} → {cl[1]:.1%})")  # fmt: skip
    text = []
    if out:
        text.append("**Reading.** Training length is the factor that closes the gap: while the clean accuracy still "
                    "rises, global multiplicative μ falls — " + "; ".join(out) + ".")  # fmt: skip
    digits = [d.mu(scan_key(p, train_key(p, "mlp", True, e, dataset="digits"), "mul")) for e in p.digits_epochs]
    dclean = [clean(scan_key(p, train_key(p, "mlp", True, e, dataset="digits"), "mul")) for e in p.digits_epochs]
    if None not in digits and None not in dclean and len(digits) > 1:
        text.append(f"On the digits model, whose clean accuracy is {min(dclean):.1%}–{max(dclean):.1%} from "
                    f"{min(p.digits_epochs)} epochs on, μ moves by at most {100 * (max(digits) / min(digits) - 1):.0f} % "
                    f"between {min(p.digits_epochs)} and {max(p.digits_epochs)} epochs: μ stops moving once the network "
                    "has converged.")  # fmt: skip
    after = []
    for m in (train_key(p, "mlp", True, p.mlp_epochs), detail_lenet(p, True)):
        a, b = d.mu(scan_key(p, m, "mul", after_bn=True)), d.mu(scan_key(p, m, "mul"))
        if a is not None and b is not None:
            after.append(
                f"{_model_label(m)}: {a / b - 1:+.0%}, to {a / PAPER_T4[m['arch'], 'mul', True]:.2f}× the paper"
            )
    if after:
        text.append("Noise after BatchNorm as well (which the paper's tables leave out) lowers μ further: "
                    + "; ".join(after) + ".")  # fmt: skip
    grid = []
    for m in (train_key(p, "mlp", True, p.mlp_epochs), train_key(p, "mlp", False, p.mlp_epochs), detail_lenet(p, True)):
        a, b = d.mu(scan_key(p, m, "mul", grid="paper")), d.mu(scan_key(p, m, "mul"))
        if a is not None and b is not None:
            grid.append(abs(a / b - 1))
    pts = []
    for bn in (True, False):
        m = train_key(p, "mlp", bn, p.mlp_epochs)
        for at in POINT_SETS[bn].values():
            a, b = d.mu(scan_key(p, m, "mul", at=at)), d.mu(scan_key(p, m, "mul"))
            if at is not None and a is not None and b is not None:
                pts.append(a / b - 1)
    if grid:
        text.append(f"The paper's whole σ grid against the cut one changes μ by at most {100 * max(grid):.1f} %, and "
                    "points per op instead of per layer change nothing (the same points on these networks).")  # fmt: skip
    if pts:
        text.append(f"Noising fewer points (no input, no logits, only Gemm or only ReLU outputs) moves μ by "
                    f"{min(pts):+.0%} … {max(pts):+.0%}: mostly up, the wrong direction to explain an excess.")  # fmt: skip
    if text:
        d.w(*(t + "\n" for t in text))


def _runs(d: Doc, meta: dict) -> None:
    m = meta["machine"]
    d.w("## How these results were made", "",
        f"Machine: {_cpus(m)} ({m['processor']}), {m['platform']}; Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']}, torch {m['torch']}, numpy {m['numpy']}. Commands (each run resumes the stored results; "
        "wall time of that invocation):", "")  # fmt: skip
    for run_ in meta.get("runs", []):
        if run_["command"].startswith("("):  # a note, not a command
            d.w(f"- {run_['command'][1:-1]} ({run_['started']})")
            continue
        took = f"{run_['minutes']:.0f} min" if run_.get("minutes") is not None else "stopped before its end"
        d.w(f"- `{run_['command']}` — started {run_['started']}, {took}")
    total = {}
    for kind in ("train", "scan", "plan"):
        folder = d.store.root / kind
        secs = [json.loads(f.read_text())["seconds"] for f in folder.glob("*.json")] if folder.is_dir() else []
        total[kind] = (len(secs), sum(secs) / 60)
    d.w("", "Compute in the store: " + "; ".join(f"{n} {kind} results, {mins:.0f} min" for kind, (n, mins) in total.items())
        + ". A command \"stopped before its end\" was stopped by hand: what it had stored stays, and the commands "
        "after it resumed from there. Regenerate this page with `python benchmarks/reproduce.py --doc-only`.", "")  # fmt: skip


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run (tiny training, few images)")
    parser.add_argument("--out-dir", type=Path, default=None, help=f"the result store (default {_repo_rel(OUT_DIR)}; "
                        "--quick: a quick/ folder inside it)")  # fmt: skip
    parser.add_argument("--doc", type=Path, default=None, help=f"the document written (default {_repo_rel(DOC)}; "
                        "--quick: reproduction.md in the store)")  # fmt: skip
    parser.add_argument("--doc-only", action="store_true", help="only regenerate the document from the store")
    parser.add_argument("--no-doc", action="store_true", help="compute only")
    parser.add_argument("--workers", type=int, default=0, help="walk the points on a local Dask cluster of N processes")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch and onnxruntime (default 1)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding Fashion-MNIST's files")
    parser.add_argument("--only", default=None, help="only the results whose section starts with one of these "
                        "(comma-separated: 'Table 4', 'Table 3', 'Fig. 2', 'Fig. 3', 'excess')")  # fmt: skip
    parser.add_argument("--budget", type=float, default=None, help="stop starting new results after N minutes")
    args = parser.parse_args(argv)
    prof = Profile.quick() if args.quick else Profile()
    out_dir = args.out_dir or (OUT_DIR / "quick" if args.quick else OUT_DIR)
    doc = args.doc or (out_dir / "reproduction.md" if args.quick else DOC)
    meta_path = out_dir / "run.json"
    if args.doc_only:
        print(write_doc(out_dir, doc))
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"runs": []}
    if meta.get("profile") not in (None, json.loads(json.dumps(asdict(prof)))):
        meta["runs"].append({"command": "(the profile changed: results of other settings stay stored, unused)",
                             "started": time.strftime("%Y-%m-%d %H:%M"), "minutes": None})  # fmt: skip
    meta["profile"], meta["machine"] = asdict(prof), machine()
    shown = ["python", "benchmarks/reproduce.py", *(argv if argv is not None else sys.argv[1:])]
    entry = {"command": shlex.join(shown), "started": time.strftime("%Y-%m-%d %H:%M"), "minutes": None}
    meta["runs"].append(entry)
    meta_path.write_text(json.dumps(meta, indent=1))
    began = time.perf_counter()
    run(prof, Store(out_dir), args)
    entry["minutes"] = round((time.perf_counter() - began) / 60, 1)
    latest = json.loads(meta_path.read_text())  # another invocation may have written meanwhile
    runs: dict = {}
    for other in [*latest.get("runs", []), *meta["runs"]]:  # ours last: this entry's minutes win
        known = runs.get((other["command"], other["started"]))
        if known is None or other.get("minutes") is not None:
            runs[other["command"], other["started"]] = other
    meta["runs"] = sorted(runs.values(), key=lambda r: r["started"])
    meta_path.write_text(json.dumps(meta, indent=1))
    if not args.no_doc:
        print(write_doc(out_dir, doc))


if __name__ == "__main__":
    main()
