"""GPU smoke check: the trainer on CUDA, export fidelity, and the scan's CUDA provider choice.

    python benchmarks/gpu_check.py            # on a machine with a CUDA GPU

Stops at once, with exit code 2 and what is missing, on a machine without torch CUDA or
onnxruntime's CUDA provider; exits 1 when the CUDA scan fails. Prints the devices used. Trains LeNet-5+BN on scikit-learn digits (upsampled to 32×32×3) for a
few epochs on CUDA and on the CPU, checks the exported model against torch (≤ 1e-5), scans it,
then scans it with onnxruntime's CUDA execution provider (``--device cuda``, needs onnxruntime-gpu) and
the CPU provider and compares the curves.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

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


def upsample(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(np.repeat(x, 4, axis=2), 4, axis=3), 3, axis=1).astype(np.float32)


def main(work: Path) -> None:
    """``work``: a scratch folder, deleted afterwards."""
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


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        main(Path(scratch))
