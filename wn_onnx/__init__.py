"""wn-onnx: Walking Noise robustness analysis for any ONNX model.

The public API (README "Python API"): ``load_model`` → ``find_points`` → ``load_data`` →
``scan`` → :class:`Report` → ``plan`` / ``check``; ``fit_curve`` for curves measured elsewhere.
Names load on first use, so ``import wn_onnx`` stays light (the CLI's start-up time).
"""

import os

# onnxruntime's telemetry writes a database and a device id under ~/.cache/Microsoft when the
# library loads; its switch must be set before the first import (disable_telemetry_events()
# after the import is too late for those files). A user's explicit setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

_API = {
    "load_model": "wn_onnx.api",
    "LoadedModel": "wn_onnx.io.model",
    "Dataset": "wn_onnx.io.data",
    "NoiseSpec": "wn_onnx.noise",
    "NoiseModel": "wn_onnx.noise",
    "Axis": "wn_onnx.noise",
    "make_noise": "wn_onnx.noise",
    "find_weight_points": "wn_onnx.graph_passes.weights",
    "Point": "wn_onnx.graph_passes",
    "find_points": "wn_onnx.api",
    "load_data": "wn_onnx.api",
    "scan": "wn_onnx.api",
    "ScanConfig": "wn_onnx.scan_config",
    "Verdict": "wn_onnx.gate",
    "Plan": "wn_onnx.planner",
    "fit_curve": "wn_onnx.api",
    "plan": "wn_onnx.api",
    "check": "wn_onnx.api",
    "digital": "wn_onnx.api",
    "apply_plan": "wn_onnx.api",
    "binarize": "wn_onnx.api",
    "mixed": "wn_onnx.api",
    "weight_magnitudes": "wn_onnx.api",
    "train": "wn_onnx.api",
    "read_report": "wn_onnx.api",
    "Report": "wn_onnx.results.report",
    "Curve": "wn_onnx.results.report",
    "PointCurve": "wn_onnx.results.report",
    "GlobalCurve": "wn_onnx.results.report",
    "Fit": "wn_onnx.results.report",
    "Adaptive": "wn_onnx.results.report",
    "Sequential": "wn_onnx.results.report",
    "DEFAULT_MODEL": "wn_onnx.io.embedded",  # the embedded digits MLP …
    "DEFAULT_DATA": "wn_onnx.io.embedded",  # … and its held-out split
    "WnError": "wn_onnx.errors",
    "ModelError": "wn_onnx.errors",
    "DataError": "wn_onnx.errors",
    "ConfigError": "wn_onnx.errors",
    "DeviceError": "wn_onnx.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wn_onnx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
