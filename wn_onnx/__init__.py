"""wn-onnx: Walking Noise robustness analysis for any ONNX model."""

__version__ = "0.1.0"
