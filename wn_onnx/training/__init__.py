"""Training apart from analysis: the paper's nets, the noisy trainer, ONNX export, the embedded default, sweeps.

Nothing here is imported by the analysis path, so scanning needs no torch."""
