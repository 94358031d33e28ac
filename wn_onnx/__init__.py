"""wn-onnx: Walking Noise robustness analysis for any ONNX model."""

import os

# onnxruntime's telemetry writes a database and a device id under ~/.cache/Microsoft when the
# library loads; its switch must be set before the first import (disable_telemetry_events()
# after the import is too late for those files). A user's explicit setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
