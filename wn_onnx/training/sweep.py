"""Noisy-training sweeps (points × σ × seeds × …) on Dask distributed, resumable from SQLite.

A ``sweep.toml`` names the axes; their cross product becomes runs, each keyed by the hash of its
resolved configuration. With training noise, a run is one training under noise at one point (or
all: ``"global"``) and its evaluation under the same noise. Without (``training_noise = false``),
a run trains one clean network per (BN, clamp, seed) and evaluates it at every (noise, point, σ).
Results are written by the client, as they arrive, to ``<sweep>.sqlite`` (WAL) beside the file;
a run is recorded as done only when complete, so a killed client or worker loses only runs in
flight, and re-running skips done keys and retries failed ones.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tomllib

from wn_onnx.errors import WnError
from wn_onnx.io import config as cs
from wn_onnx.io.safeio import read_text
from wn_onnx.noise import NoiseSpec, parse_grid
from wn_onnx.results.schema import SCHEMA_VERSION
from wn_onnx.results.store import digest, open_store, store_error

if TYPE_CHECKING:
    from wn_onnx.engine.memory import Share

SCHEMA = {
    "dataset": cs.STRING, "data_dir": cs.STRING, "arch": cs.STRING, "bn": replace(cs.BOOL, many=True),
    "noise": replace(cs.NOISE, many=True), "order": cs.ORDER, "sigma_ratio": cs.FRACTION,
    "points": cs.Key((str, int), '"all", "global" or point indices >= 0',
                  lambda v: v in ("all", "global") or (isinstance(v, int) and v >= 0), many=True),
    "sigmas": cs.GRID, "seeds": replace(cs.SEED, many=True), "epochs": cs.EPOCHS,
    "clamp": cs.Key((bool, int, float), "false or a finite number > 0",
                 lambda v: v is False or (not isinstance(v, bool) and cs.POSITIVE.accepts(v)), many=True),
    "training_noise": cs.BOOL, "limit": cs.POSITIVE_INT, "eval_limit": cs.POSITIVE_INT, "eval_repeats": cs.REPEATS,
    "keep_onnx": cs.STRING, "batch_size": cs.POSITIVE_INT, "lr": cs.POSITIVE,
}  # fmt: skip
REQUIRED = {"dataset", "arch", "sigmas", "seeds"}


def _list(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass
class Sweep:
    path: Path
    conf: dict
    runs: list[dict]

    @property
    def db_path(self) -> Path:
        return self.path.with_name(self.path.name + ".sqlite")


def load_sweep(path: str | Path) -> Sweep:
    """Parse and expand ``sweep.toml``; malformed TOML and unknown keys are errors."""
    p = Path(path)
    try:
        conf = tomllib.loads(read_text(p, "sweep file"))
    except tomllib.TOMLDecodeError as err:
        raise WnError(f"{p}: malformed TOML ({err})") from None
    cs.check_keys(conf, SCHEMA, str(p))
    missing = sorted(REQUIRED - set(conf))
    if missing:
        raise WnError(f"{p}: missing key(s) {', '.join(missing)}")
    kinds = _list(conf.get("noise", "add"))
    sigmas = parse_grid(conf["sigmas"]) if isinstance(conf["sigmas"], str) else np.asarray(_list(conf["sigmas"]), float)
    points = conf.get("points", "all")
    points = ["all"] if points == "all" else _list(points)
    common = {
        k: conf.get(k)
        for k in ("dataset", "data_dir", "arch", "order", "sigma_ratio", "limit", "eval_limit", "keep_onnx")
    }
    common.update(epochs=int(conf.get("epochs", 100)), eval_repeats=int(conf.get("eval_repeats", 1)),
                  batch_size=int(conf.get("batch_size", 128)), lr=float(conf.get("lr", 1e-3)))  # fmt: skip
    trained = bool(conf.get("training_noise", True))
    for bn in dict.fromkeys(bool(b) for b in _list(conf.get("bn", True))):  # every run must be able to start
        count = _point_count(conf["arch"], bn)
        beyond = [q for q in points if isinstance(q, int) and q >= count]
        if beyond:
            raise WnError(f"{p}: point {beyond[0]} out of range: {conf['arch']} {'with' if bn else 'without'} "
                          f"BatchNorm has {count} points (0-{count - 1})")  # fmt: skip
    runs = []
    axes = itertools.product(_list(conf.get("bn", True)), _list(conf.get("clamp", False)), _list(conf["seeds"]))
    for bn, clamp, seed in axes:
        base = {
            **common,
            "bn": bool(bn),
            "clamp": None if clamp in (False, None, 0) else float(clamp),
            "seed": int(seed),
        }
        if trained:  # one training per point: "all" is each point of the architecture
            each = [q for p in points for q in (range(_point_count(conf["arch"], bool(bn))) if p == "all" else [p])]
            for kind, point, sigma in itertools.product(kinds, each, sigmas):
                runs.append({**base, "training_noise": True, "noise": kind, "point": point, "sigma": float(sigma)})
        else:
            runs.append(
                {**base, "training_noise": False, "noise": kinds, "point": points, "sigma": [float(s) for s in sigmas]}
            )
    for run in runs:
        run["key"] = digest({k: v for k, v in run.items() if k != "key"})[:20]
    return Sweep(p, conf, runs)


@functools.cache
def _point_count(arch: str, bn: bool) -> int:
    """Noise points of ``arch`` (their count does not depend on the input size or classes)."""
    from wn_onnx.training.nets import ARCHS, build

    if arch not in ARCHS:
        raise WnError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return len(build(arch, (1, 32, 32), 2, bn).points)


def expand_points(run: dict, count: int) -> list:
    """Point entries of a run: indices, ``"global"``; ``"all"`` is every index."""
    out = []
    for p in _list(run["point"]):
        out += list(range(count)) if p == "all" else [p]
    return out



def run_noise(run: dict, kind: str) -> NoiseSpec:
    """The noise of one run: order and ratio belong to mixed noise only (an add or mul run in the
    same sweep ignores them); a ratio of 0 is a ratio (pure multiplicative), not a missing value."""
    if kind != "mixed":
        return NoiseSpec(kind)
    ratio = run.get("sigma_ratio")
    return NoiseSpec(kind, run.get("order") or "mul-first", 0.5 if ratio is None else ratio)


def execute_run(run: dict, memory: int | Share | None = None) -> dict:
    """One run, start to finish (this is what a Dask worker executes); its noisy evaluation runs
    under the ``memory`` budget (engine.memory: this process's, or its share of the client's)."""
    import torch

    from wn_onnx.io.datasets import load_split
    from wn_onnx.training.nets import build
    from wn_onnx.training.trainer import TrainConfig, eval_batch, evaluate_accuracy, train, weight_stats

    torch.set_num_threads(1)  # the same numbers whatever machine or worker runs it
    began = time.perf_counter()
    tr = load_split(run["dataset"], "train", run.get("data_dir"), limit=run.get("limit"))
    te = load_split(run["dataset"], tr.info.val_split, run.get("data_dir"), limit=run.get("eval_limit"))
    classes = max(len(tr.info.classes), int(tr.y.max()) + 1)
    shape = tuple(tr.x.shape[1:])
    count = len(build(run["arch"], shape, classes, run["bn"]).points)

    def where(point) -> list[int] | None:
        if point == "global":
            return None
        if not isinstance(point, int) or not 0 <= point < count:
            raise WnError(f"point {point!r} out of range: {run['arch']} has {count} points")
        return [point]

    noise = run_noise(run, run["noise"]) if run["training_noise"] else None
    at = where(run["point"]) if run["training_noise"] else None
    cfg = TrainConfig(run["arch"], run["dataset"], run["bn"], run["epochs"], run["lr"], run["batch_size"], run["seed"],
                      noise, run["sigma"] if noise else 0.0, at, run["clamp"], tr.info.augment)  # fmt: skip
    net, history = train(cfg, (tr.x, tr.y), (te.x, te.y), classes, shape, tr.info.mean, tr.info.std)
    xv, yv = torch.from_numpy(te.x), torch.from_numpy(te.y)
    batch = eval_batch(net, xv, memory)  # before the seed: it takes no draws anyway (noise is off)
    torch.manual_seed(run["seed"] + 1)
    evaluations = []
    combos = [(run["noise"], run["point"], run["sigma"])] if run["training_noise"] else list(
        itertools.product(_list(run["noise"]), expand_points(run, count), _list(run["sigma"])))  # fmt: skip
    for kind, point, sigma in combos:
        net.set_noise(run_noise(run, kind), sigma, where(point))
        accs = [evaluate_accuracy(net, xv, yv, batch) for _ in range(run["eval_repeats"])]
        evaluations.append({"noise": kind, "point": point, "sigma": sigma, "accuracy": accs})
    net.set_noise(None, 0.0, None)
    out = {"clean_accuracy": evaluate_accuracy(net, xv, yv, batch), "evaluations": evaluations, "history": history.epochs,
           "weight_stats": weight_stats(net), "seconds": time.perf_counter() - began, "num_classes": classes,
           "input_shape": list(shape), "val_samples": len(yv), "eval_batch": batch, "host": socket.gethostname()}  # fmt: skip
    if run.get("keep_onnx"):
        from wn_onnx.training.export import export_onnx

        folder = Path(str(run["keep_onnx"]))
        out["onnx"] = str(export_onnx(net, shape, folder / f"{run['key']}.onnx"))
    return out


COLUMNS = ["key", "config", "status", "attempts", "clean_accuracy", "noisy_accuracy", "result", "error", "onnx", "seconds",
           "updated"]  # fmt: skip
STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    clean_accuracy REAL, noisy_accuracy REAL, result TEXT, error TEXT, onnx TEXT, seconds REAL, updated REAL NOT NULL
)
"""


class RunStore:
    """The sweep's SQLite table; only the client writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_store(path, STORE_SCHEMA, "runs", COLUMNS, "sweep store")

    def rows(self) -> dict[str, dict]:
        """Every stored run; a row whose result is not JSON counts as failed (it is run again)."""
        try:
            cur = self.db.execute("SELECT key, status, attempts, result, error, updated FROM runs").fetchall()
        except sqlite3.Error as err:
            raise store_error(self.path, err, "sweep store") from None
        rows = {}
        for k, s, a, r, e, u in cur:
            try:
                result = json.loads(r) if r else None
            except (TypeError, ValueError, RecursionError):
                s, result, e = "failed", None, "stored result is not JSON"
            if s == "done" and not isinstance(result, dict):
                s, result = "failed", None
            rows[k] = {
                "status": s,
                "attempts": a if isinstance(a, int) else 0,
                "result": result,
                "error": e,
                "updated": u,
            }
        return rows

    def mark(self, run: dict, status: str, result: dict | None = None, error: str | None = None) -> None:
        noisy = None
        if result:
            accs = [a for ev in result["evaluations"] for a in ev["accuracy"]]
            noisy = float(np.mean(accs)) if accs else None
        try:
            self._write(run, status, result, error, noisy)
        except sqlite3.Error as err:
            raise store_error(self.path, err, "sweep store") from None

    def claim(self, run: dict) -> bool:
        """Mark ``run`` running for this client unless it is done or another live client has it;
        one transaction, so two clients never both take a run."""
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                row = self.db.execute("SELECT status, error, updated FROM runs WHERE key = ?", (run["key"],)).fetchone()
                if row is not None:
                    status, owner, updated = row
                    if status == "done" or (status == "running" and owner != _owner()
                                            and _claim_alive({"error": owner, "updated": updated})):  # fmt: skip
                        return False
                self._write(run, "running", None, _owner(), None)
            return True
        except sqlite3.Error as err:
            raise store_error(self.path, err, "sweep store") from None

    def _write(self, run: dict, status: str, result: dict | None, error: str | None, noisy: float | None) -> None:
        with self.db:
            self.db.execute(
                """INSERT INTO runs (key, config, status, attempts, clean_accuracy, noisy_accuracy, result, error, onnx, seconds, updated)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(key) DO UPDATE SET status=excluded.status,
                     attempts=runs.attempts + (excluded.status IN ('done', 'failed')),
                     clean_accuracy=excluded.clean_accuracy, noisy_accuracy=excluded.noisy_accuracy, result=excluded.result,
                     error=excluded.error, onnx=excluded.onnx, seconds=excluded.seconds, updated=excluded.updated""",
                (run["key"], json.dumps(run), status, int(status in ("done", "failed")), result and result["clean_accuracy"], noisy,
                 json.dumps(result) if result else None, error, result and result.get("onnx"), result and result["seconds"], time.time()),
            )  # fmt: skip

    def close(self) -> None:
        self.db.close()


def status_counts(sweep: Sweep) -> dict[str, int]:
    """Runs per status; a run left "running" by a client that is gone counts as pending."""
    rows = _stored_rows(sweep)
    counts = {"done": 0, "running": 0, "failed": 0, "pending": 0}
    for run in sweep.runs:
        row = rows.get(run["key"])
        status = row["status"] if row else "pending"
        counts["pending" if status == "running" and not _claim_alive(row) else status] += 1
    return counts


def _stored_rows(sweep: Sweep) -> dict[str, dict]:
    if not sweep.db_path.exists():
        return {}
    store = RunStore(sweep.db_path)
    try:
        return store.rows()
    finally:
        store.close()


OWNER = re.compile(r"^running in (?P<host>\S+) pid (?P<pid>\d+)$")
CLAIM_SECONDS = 24 * 3600  # a claim from another machine is trusted this long after its last update


def _owner() -> str:
    return f"running in {socket.gethostname()} pid {os.getpid()}"


def _claim_alive(row: dict) -> bool:
    """Whether the client that marked a row "running" may still be working on it."""
    m = OWNER.match(row.get("error") or "")
    if m is None:
        return False
    if m["host"] != socket.gethostname():
        return time.time() - (row.get("updated") or 0) < CLAIM_SECONDS
    try:
        os.kill(int(m["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def run_sweep(
    sweep: Sweep,
    workers: int = 2,
    scheduler: str | None = None,
    retries: int = 1,
    on_update: Callable[[dict], None] | None = None,
    memory: int | None = None,
) -> dict[str, int]:
    """Execute every run not yet done (failed ones up to ``retries`` more times).

    ``workers = 0`` runs serially in this process (no Dask), the reference for the same rows.
    ``memory``: the peak resident bytes of the evaluations (None: engine.memory's default); the
    workers of a local cluster share it with this process, as a scan's do (engine.memory.Share).
    """
    store = RunStore(sweep.db_path)
    try:
        rows = store.rows()
        status = {r["key"]: rows.get(r["key"], {}).get("status") for r in sweep.runs}
        spent = {k for k, s in status.items() if s == "failed" and rows[k]["attempts"] > retries}  # retries used up
        todo = [r for r in sweep.runs if status[r["key"]] != "done" and r["key"] not in spent]
        done = sum(s == "done" for s in status.values())
        stats = {"total": len(sweep.runs), "done": done, "failed": len(spent), "todo": len(todo), "elsewhere": 0}
        if on_update:
            on_update(stats)
        if workers == 0 and not scheduler:
            for run in todo:
                if store.claim(run):
                    _serial(store, run, retries, stats, on_update, memory)
                else:
                    stats["elsewhere"] += 1
            return stats
        from wn_onnx.engine.memory import Share
        from wn_onnx.executors import connect  # the Dask client scans use too

        with connect(workers, scheduler) as (client, cluster):
            from distributed import as_completed

            share = memory if cluster is None else Share.split(memory, workers)  # this process holds the scheduler
            attempts = {r["key"]: 0 for r in todo}
            futures = {}
            for run in todo:
                if not store.claim(run):
                    stats["elsewhere"] += 1
                    continue
                futures[client.submit(execute_run, run, share, key=f"wn-{run['key']}-0", pure=False)] = run
            pending = as_completed(list(futures))
            for future in pending:
                run = futures.pop(future)
                try:
                    result = future.result()
                except Exception as err:
                    attempts[run["key"]] += 1
                    if attempts[run["key"]] <= retries:
                        retry = client.submit(
                            execute_run, run, share, key=f"wn-{run['key']}-{attempts[run['key']]}", pure=False
                        )
                        futures[retry] = run
                        pending.add(retry)
                        continue
                    store.mark(run, "failed", error=f"{type(err).__name__}: {err}")
                    stats["failed"] += 1
                else:
                    store.mark(run, "done", result)
                    stats["done"] += 1
                if on_update:
                    on_update(stats)
        return stats
    finally:
        store.close()


def _serial(store: RunStore, run: dict, retries: int, stats: dict, on_update, memory: int | None) -> None:
    for attempt in range(retries + 1):
        try:
            result = execute_run(run, memory)
        except Exception as err:
            if attempt == retries:
                store.mark(run, "failed", error=f"{type(err).__name__}: {err}")
                stats["failed"] += 1
        else:
            store.mark(run, "done", result)
            stats["done"] += 1
            break
    if on_update:
        on_update(stats)


def sweep_reports(sweep: Sweep) -> dict[str, dict]:
    """Scan-schema reports from the finished runs, one per (noise kind, BN, clamp) group:
    accuracy per σ over seeds (and evaluation repeats) per point → the same μ fit."""
    from wn_onnx.results.fit import curve_json

    rows = _stored_rows(sweep)
    done = [(r, rows[r["key"]]["result"]) for r in sweep.runs if rows.get(r["key"], {}).get("status") == "done"]
    if not done:
        raise WnError(f"{sweep.path}: no finished runs yet (wn-onnx sweep run {sweep.path})")
    groups: dict[tuple, list] = {}
    for run, result in done:
        for ev in result["evaluations"]:
            groups.setdefault((ev["noise"], run["bn"], run["clamp"]), []).append((run, result, ev))
    reports = {}
    for (kind, bn, clamp), items in sorted(groups.items(), key=str):
        run0, res0 = items[0][0], items[0][1]
        points = _reference_points(run0["arch"], tuple(res0["input_shape"]), res0["num_classes"], bn)
        chance = 1.0 / res0["num_classes"]
        clean = float(np.mean([res["clean_accuracy"] for _, res, _ in items]))
        # the validation-set size the accuracies were counted on (results stored before it was kept: unknown, 1000)
        samples = int(min(res.get("val_samples", 1000) for _, res, _ in items))
        curves: dict = {}
        for _, _, ev in items:
            curves.setdefault(ev["point"], {}).setdefault(ev["sigma"], []).extend(ev["accuracy"])
        report = {"schema_version": SCHEMA_VERSION, "model": f"sweep:{sweep.path.name} arch={run0['arch']} bn={bn} clamp={clamp}",
                  "noise": {"kind": kind, "order": run0.get("order") if kind == "mixed" else None},
                  "training_noise": run0["training_noise"], "seed": None, "seeds": sorted({r["seed"] for r, _, _ in items}),
                  "clean_accuracy": clean, "num_classes": res0["num_classes"], "chance": chance,
                  "data": {"source": run0["dataset"], "samples": samples, "label_free": False}, "points": [], "global": None, "partial": False}  # fmt: skip
        for point, by_sigma in sorted(
            curves.items(), key=lambda kv: (kv[0] == "global", kv[0] if kv[0] != "global" else 0)
        ):
            sig = np.array(sorted(by_sigma))
            width = min(len(v) for v in by_sigma.values())
            acc = np.array([by_sigma[s][:width] for s in sig])
            curve = curve_json(sig, acc, np.zeros_like(acc, dtype=int), chance, samples, clean, shared_draws=False)
            if point == "global":
                report["global"] = {"points": list(range(len(points))), **curve}
            else:
                report["points"].append({**points[point].to_json(), **curve})
        reports[f"{kind}_{'bn' if bn else 'nobn'}{f'_clamp{clamp:g}' if clamp else ''}"] = report
    return reports


def _reference_points(arch: str, shape: tuple, classes: int, bn: bool) -> list:
    """Point names of the architecture's ONNX export, so sweep reports line up with scans."""
    import tempfile

    from wn_onnx.graph_passes import find_points
    from wn_onnx.io.model import load_model
    from wn_onnx.training.export import export_onnx
    from wn_onnx.training.nets import build

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(build(arch, shape, classes, bn), shape, Path(tmp) / "ref.onnx")
        return find_points(load_model(path).model)
