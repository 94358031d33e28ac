"""GPU checks: a smoke check of the trainer, the export and the scan on CUDA, and (``--deploy``)
a deployment-size scan on CUDA.

    python benchmarks/gpu_check.py            # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --deploy   # the deployment-size scan (docs/benchmarks.md, "GPU")

Both stop at once, with exit code 2 and one line naming what is missing, on a machine without
CUDA (the smoke check: torch CUDA or onnxruntime's CUDA provider; ``--deploy``: ``nvidia-smi``,
onnxruntime's CUDAExecutionProvider, or a tiny session that actually runs on it — checked before
anything heavy is imported or built); they exit 1 when a CUDA scan fails.

The smoke check trains LeNet-5+BN on scikit-learn digits (upsampled to 32×32×3) for a few epochs
on CUDA and on the CPU, checks the exported model against torch (≤ 1e-5), scans it, then scans it
with onnxruntime's CUDA execution provider (``--device cuda``, needs onnxruntime-gpu) and the CPU
provider and compares the curves.

``--deploy`` (issue #30): bench_scale.py's deployment model — ResNet-18's layout at 224×224, 1,000
classes, BN calibrated, ``--images`` seeded label-free Gaussian images (its builder, imported) —
scanned through the public API with ``ScanConfig(device="cuda", estimator="sequential",
mode="walking", label_free=True)`` at every point (``--at`` to choose) within ``--budget``
seconds (then the scan stops, the finished points count, and the time for all of them is
projected); then the same scan on the CPU at ``--cpu-points`` of the finished points (default 4,
spread over the later half, whose suffixes are cheaper; ``--cpu-at`` names them) within
``--cpu-budget``, μ compared per point within the combined error; peak GPU memory from
``nvidia-smi`` sampled in the background (device-wide, and less the reading before the scan).
Writes ``--out`` (default benchmarks/results/gpu_deploy.json) and prints a summary. Sized for
about 5 minutes of device time with the defaults; ``--images``, ``--at``, ``--budget`` and
``--cpu-budget`` shrink it. Exits 1 when a compared point disagrees beyond twice the combined error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPLOY_DEVICE = "cuda"  # the device of the deploy scan (a test may swap in "cpu" to run it without a GPU)


def upsample(x):
    import numpy as np

    return np.repeat(np.repeat(np.repeat(x, 4, axis=2), 4, axis=3), 3, axis=1).astype(np.float32)


def smoke(work: Path) -> None:
    """The smoke check; ``work``: a scratch folder, deleted afterwards."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from wn_onnx.errors import WnError
    from wn_onnx.io.data import make_dataset
    from wn_onnx.io.embedded import digits_split
    from wn_onnx.io.model import load_model
    from wn_onnx.noise import NoiseSpec
    from wn_onnx.scan_config import ScanConfig
    from wn_onnx.scanner import run_scan
    from wn_onnx.training.export import export_onnx, max_export_error
    from wn_onnx.training.trainer import TrainConfig, train

    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))  # fmt: skip
    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    missing = [what for what, ok in (("torch with CUDA", torch.cuda.is_available()),
               ("onnxruntime's CUDAExecutionProvider (docs/guide.md, \"GPU\")",
                "CUDAExecutionProvider" in ort.get_available_providers())) if not ok]  # fmt: skip
    if missing:
        print(f"gpu_check needs a CUDA GPU; missing: {'; '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    x_train, y_train, x_test, y_test = digits_split()
    x_train, x_test = upsample(x_train), upsample(x_test)
    results = {}
    for device in ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]:
        cfg = TrainConfig(
            "lenet5", "digits32", epochs=8, augment=True, device=device, noise=NoiseSpec("add"), sigma=0.3, at=[5]
        )
        began = time.perf_counter()
        net, history = train(
            cfg, (x_train, y_train), (x_test, y_test), 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        )
        seconds = time.perf_counter() - began
        path = export_onnx(net.cpu(), (3, 32, 32), work / f"{device}.onnx")
        error = max_export_error(net, path, x_test[:256])
        report = run_scan(load_model(path), make_dataset(x_test, y_test, "digits32"),
                          ScanConfig(noise="add", levels="log:1e-2:1e2:17", repeats=3, mode="global"))  # fmt: skip
        results[device] = history.epochs[-1]
        print(f"{device}: {seconds:.1f} s for 8 epochs, val {history.epochs[-1]['val_accuracy']:.2%} "
              f"(under training noise {history.epochs[-1]['val_accuracy_noisy']:.2%}), export error {error:.1e}, "
              f"global μ {report['global']['mu']:.3g} ({report['global']['status']})")  # fmt: skip
    # The scan on onnxruntime's CUDA provider (IO binding, stacked σ) against the CPU provider:
    # the same seeded draws, so the curves may differ only by predictions that flip on rounding.
    data = make_dataset(x_test, y_test, "digits32")
    config = ScanConfig(noise="mul", levels="log:1e-2:1e2:17", repeats=2, mode="both")
    scans = {}
    for device in ("cpu", "cuda"):
        began = time.perf_counter()
        try:
            scans[device] = run_scan(load_model(work / "cpu.onnx"), data, config.replace(device=device))
        except WnError as err:
            print(f"scan --device {device}: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"scan --device {device}: {time.perf_counter() - began:.1f} s on {scans[device]['providers']}")
    pairs = list(zip([*scans["cpu"]["points"], scans["cpu"]["global"]], [*scans["cuda"]["points"], scans["cuda"]["global"]], strict=True))  # fmt: skip
    worst = max(float(np.abs(np.subtract(a["accuracy"], b["accuracy"])).max()) for a, b in pairs)
    print(f"CPU vs CUDA: largest accuracy difference {worst:.4f} ({worst * len(data):.0f} samples) over {len(pairs)} curves; "
          "μ " + ", ".join(f"{a['mu']:.3g}|{b['mu']:.3g}" for a, b in pairs if a["mu"] and b["mu"]))  # fmt: skip



# --- --deploy ------------------------------------------------------------------------------------


def cuda_missing() -> list[str]:
    """What keeps the deploy run off CUDA, each named for the user; empty when a tiny session ran
    on onnxruntime's CUDAExecutionProvider. Imports onnxruntime and onnx, nothing heavier."""
    missing = []
    if shutil.which("nvidia-smi") is None:
        missing.append("nvidia-smi (not on PATH: no NVIDIA driver; it also reads the peak GPU memory)")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # as wn_onnx does before onnxruntime loads
    try:
        import onnxruntime as ort
    except ImportError as err:
        return [*missing, f"onnxruntime ({err})"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return [*missing, f"onnxruntime's CUDAExecutionProvider (onnxruntime {ort.__version__} has only "
                          f"{', '.join(available)}; install onnxruntime-gpu: docs/benchmarks.md, \"GPU\")"]  # fmt: skip
    try:
        ran = tiny_cuda_session(ort)
    except Exception as err:  # any failure to start means no usable CUDA
        ran = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
    if ran:
        missing.append(f"a session on CUDAExecutionProvider that runs ({ran}; CUDA 13 / cuDNN 9 libraries "
                       "on LD_LIBRARY_PATH?)")  # fmt: skip
    return missing


def tiny_cuda_session(ort) -> str:
    """Run y = x + 1 on onnxruntime's CUDA provider alone; '' when it ran there, else why not."""
    import contextlib
    import io

    import numpy as np
    from onnx import TensorProto, helper

    if hasattr(ort, "preload_dlls"):  # as the scan does (wn_onnx.engine.sessions)
        with contextlib.redirect_stdout(io.StringIO()):
            ort.preload_dlls()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "tiny", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return f"onnxruntime fell back to {session.get_providers()[0]}"
    out = session.run(None, {"x": np.arange(4, dtype=np.float32)})[0]
    return "" if np.array_equal(out, np.arange(1, 5, dtype=np.float32)) else f"wrong result {out}"


class GpuMemory:
    """Peak device-wide GPU memory (MiB) while the block runs: ``nvidia-smi`` streaming its reading
    every ``every_ms`` in the background; ``baseline`` is the reading before the block."""

    def __init__(self, every_ms: int = 100) -> None:
        self.every_ms, self.baseline, self.peak, self.samples = every_ms, None, None, 0
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def query(fields: str) -> list[str]:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", "0"],
                              capture_output=True, text=True, timeout=20, check=True)  # fmt: skip
        return [v.strip() for v in done.stdout.strip().splitlines()[0].split(",")]

    def __enter__(self) -> GpuMemory:
        self.baseline = self.peak = float(self.query("memory.used")[0])
        self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0",
                                       f"-lms={self.every_ms}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.peak = max(self.peak or 0.0, float(line.strip()))
                self.samples += 1
            except ValueError:
                continue

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)


def budgeted_scan(model: Path, x, config, budget: float, label: str) -> tuple[dict, float, list[float]]:
    """(report dict, seconds, seconds at each finished point) of ``wn_onnx.scan``; after ``budget``
    seconds the scan is interrupted and its finished points kept (``"partial": true``)."""
    import _thread

    import wn_onnx
    from wn_onnx.errors import ScanInterrupted

    ticks: list[float] = []
    began = time.perf_counter()

    def progress(description: str, total: int):
        def tick(n: float) -> None:
            for _ in range(int(n)):
                ticks.append(time.perf_counter() - began)
            if n:
                print(f"  {label}: {len(ticks)}/{total} points, {ticks[-1]:.0f} s", flush=True)

        return tick

    timer = threading.Timer(budget, _thread.interrupt_main)
    timer.daemon = True
    timer.start()
    try:
        report = wn_onnx.scan(model, (x, None), config, progress=progress).to_json()
    except ScanInterrupted as stop:
        report = stop.report
    finally:
        timer.cancel()
    return report, time.perf_counter() - began, ticks


def spread(indices: list[int], count: int) -> list[int]:
    """``count`` of ``indices`` evenly spread over their later half (cheaper suffixes on the CPU)."""
    later = indices[len(indices) // 2 :] or indices
    if len(later) <= count:
        return later
    return sorted({later[round(i * (len(later) - 1) / (count - 1))] for i in range(count)}) if count > 1 else [later[-1]]


def versions() -> dict:
    import numpy as np
    import onnxruntime as ort

    import wn_onnx

    found = {"python": platform.python_version(), "wn_onnx": wn_onnx.__version__, "numpy": np.__version__,
             "onnxruntime": ort.__version__}  # fmt: skip
    try:
        import torch

        found["torch"] = torch.__version__
    except ImportError:
        pass
    return found


def deploy(args: argparse.Namespace, work: Path) -> int:
    """The deployment-size CUDA scan (module docstring); the exit code."""
    sys.path.insert(0, str(HERE))
    from bench_scale import deploy_resnet18

    from wn_onnx.errors import WnError
    from wn_onnx.graph_passes import find_points
    from wn_onnx.io.model import load_model
    from wn_onnx.scan_config import ScanConfig

    gpu = dict(zip(("name", "driver", "memory_total_mib"), GpuMemory.query("name,driver_version,memory.total"), strict=True))
    print(f"GPU: {gpu['name']} (driver {gpu['driver']}, {gpu['memory_total_mib']} MiB); {versions()}", flush=True)
    began = time.perf_counter()
    model, x = deploy_resnet18(args.images, work)
    total = len(find_points(load_model(model).model))
    build = time.perf_counter() - began
    print(f"model: ResNet-18 layout, {total} points, {args.images} label-free images; built in {build:.0f} s", flush=True)
    base = ScanConfig(estimator="sequential", mode="walking", label_free=True, tolerance=args.tolerance,
                      at=args.at, seed=0)  # fmt: skip
    try:
        with GpuMemory() as memory:
            cuda, cuda_s, ticks = budgeted_scan(model, x, base.replace(device=DEPLOY_DEVICE), args.budget, DEPLOY_DEVICE)
    except WnError as err:
        print(f"scan --device cuda: {err}", file=sys.stderr)
        return 1
    finished = cuda.get("points", [])  # in point order, as they finished
    walked = len(finished)
    wanted = len(args.at.split(",")) if args.at else total
    print(f"cuda: {walked} points in {cuda_s:.1f} s on {cuda.get('providers')}"
          f"{' (stopped at the budget)' if cuda.get('partial') else ''}; peak GPU memory {memory.peak:.0f} MiB "
          f"({memory.peak - memory.baseline:.0f} MiB over the {memory.baseline:.0f} MiB before)", flush=True)  # fmt: skip
    ok = [p["index"] for p in finished if p.get("mu") is not None]
    cpu_at = [int(v) for v in args.cpu_at.split(",")] if args.cpu_at else spread(ok, args.cpu_points)
    cpu, cpu_s, rows = {"points": []}, 0.0, []
    if cpu_at:
        try:
            cpu, cpu_s, _ = budgeted_scan(model, x, base.replace(device="cpu", at=",".join(map(str, cpu_at))),
                                          args.cpu_budget, "cpu")  # fmt: skip
        except WnError as err:
            print(f"scan --device cpu: {err}", file=sys.stderr)
            return 1
    by_index = {p["index"]: p for p in cuda["points"]}
    for c in cpu["points"]:
        g = by_index.get(c["index"])
        if g is None or g.get("mu") is None or c.get("mu") is None:
            continue
        combined = ((g.get("mu_err") or 0.0) ** 2 + (c.get("mu_err") or 0.0) ** 2) ** 0.5
        delta = abs(g["mu"] - c["mu"])
        rows.append({"index": c["index"], "mu_cuda": g["mu"], "mu_err_cuda": g.get("mu_err"), "mu_cpu": c["mu"],
                     "mu_err_cpu": c.get("mu_err"), "delta": delta, "combined_err": combined,
                     "within_1": delta <= combined, "within_2": delta <= 2 * combined,
                     "evaluations_cuda": (g.get("sequential") or {}).get("evaluations"),
                     "evaluations_cpu": (c.get("sequential") or {}).get("evaluations")})  # fmt: skip
    # the first tick carries start-up (sessions, the clean pass); later ones one point each
    first = ticks[0] if ticks else None
    per_point = (ticks[-1] - ticks[0]) / (len(ticks) - 1) if len(ticks) > 1 else first
    projected = None if first is None else first + per_point * (wanted - 1)
    result = {
        "what": "gpu_check.py --deploy: ResNet-18 layout 224x224, BN calibrated, label-free, sequential walking scan",
        "machine": {"gpu": gpu, "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "settings": {"images": args.images, "points": total, "at": args.at, "tolerance": args.tolerance,
                     "budget_s": args.budget, "cpu_budget_s": args.cpu_budget, "cpu_at": cpu_at},
        "build_s": build,
        "cuda": {"seconds": cuda_s, "points_walked": walked, "points_wanted": wanted, "partial": bool(cuda.get("partial")),
                 "seconds_at_each_point": ticks, "first_point_with_start_up_s": first, "per_point_s": per_point,
                 "projected_all_points_s": projected,
                 "providers": cuda.get("providers"),
                 "peak_gpu_memory_mib": memory.peak, "gpu_memory_before_mib": memory.baseline,
                 "peak_gpu_memory_over_before_mib": memory.peak - memory.baseline, "memory_samples": memory.samples,
                 "evaluations": sum((p.get("sequential") or {}).get("evaluations") or 0 for p in finished),
                 "grid_evaluations": sum((p.get("sequential") or {}).get("grid_evaluations") or 0 for p in finished),
                 "points": [{k: p.get(k) for k in ("index", "op_type", "mu", "mu_err", "status")}
                            | {"evaluations": (p.get("sequential") or {}).get("evaluations")} for p in finished]},
        "cpu": {"seconds": cpu_s, "points_walked": len(cpu["points"]), "partial": bool(cpu.get("partial"))},
        "compared": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("| point | μ cuda ± err | μ cpu ± err | |Δμ| / combined err |")
    print("|---|---|---|---|")
    for r in rows:
        ratio = r["delta"] / r["combined_err"] if r["combined_err"] else float("inf") if r["delta"] else 0.0
        print(f"| {r['index']} | {r['mu_cuda']:.4g} ± {r['mu_err_cuda'] or 0:.2g} | {r['mu_cpu']:.4g} ± "
              f"{r['mu_err_cpu'] or 0:.2g} | {ratio:.2f} |")  # fmt: skip
    if projected is not None:
        print(f"cuda: first point with start-up {first:.1f} s, then {per_point:.1f} s per point; all {wanted} points "
              f"{'projected at ' if walked < wanted else 'in '}{projected:.0f} s ({projected / 60:.1f} min); "
              f"cpu: {cpu_s:.1f} s for {len(cpu['points'])} points")  # fmt: skip
    print(f"wrote {out}")
    return 0 if all(r["within_2"] for r in rows) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploy", action="store_true", help="the deployment-size ResNet-18 scan on CUDA")
    dep = parser.add_argument_group("--deploy")
    dep.add_argument("--images", type=int, default=1000, help="label-free 224×224 images (default 1000)")
    dep.add_argument("--at", help="points walked on CUDA (default: all 69)")
    dep.add_argument("--tolerance", type=float, default=0.05, help="the sequential estimator's ±·μ (default 0.05)")
    dep.add_argument("--budget", type=float, default=150, help="seconds for the CUDA scan, then it stops (default 150)")
    dep.add_argument("--cpu-points", type=int, default=4, help="finished points scanned again on the CPU (default 4)")
    dep.add_argument("--cpu-at", help="those points by index (default: spread over the later half)")
    dep.add_argument("--cpu-budget", type=float, default=60, help="seconds for the CPU scan (default 60)")
    dep.add_argument("--out", default=str(HERE / "results" / "gpu_deploy.json"), help="the JSON result")
    args = parser.parse_args()
    if args.deploy:
        missing = cuda_missing()
        if missing:
            print(f"gpu_check --deploy needs CUDA; missing: {'; '.join(missing)}", file=sys.stderr)
            raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="wn_gpu_") as scratch:
        if args.deploy:
            raise SystemExit(deploy(args, Path(scratch)))
        smoke(Path(scratch))


if __name__ == "__main__":
    main()
