"""Export a torch network to ONNX the way the points need it: BatchNorm kept as its own node."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch


def export_onnx(
    model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path, metadata: dict | None = None
) -> Path:
    """Noise-free export with a dynamic batch axis and ``metadata`` in ``metadata_props``.

    The TorchScript exporter without constant folding keeps Conv/Gemm and BatchNormalization
    apart (the dynamo exporter folds BN away and with it the BN points).
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    sample = torch.zeros((2, *input_shape))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (sample,), str(path), dynamo=False, do_constant_folding=False, opset_version=17,
            input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )  # fmt: skip
    model.train(was_training)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"wn_onnx.{key}", value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))
    return path


def max_export_error(model: torch.nn.Module, path: str | Path, x: np.ndarray) -> float:
    """Largest |ONNX − torch eval| over inputs ``x`` (the export must stay within 1e-5)."""
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        ref = (
            model(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(next(model.parameters()).device))
            .cpu()
            .numpy()
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]
    return float(np.abs(got - ref).max())


def read_metadata(proto: onnx.ModelProto) -> dict:
    """The ``wn_onnx.*`` metadata of a model, JSON values decoded."""
    out = {}
    for entry in proto.metadata_props:
        if entry.key.startswith("wn_onnx."):
            try:
                out[entry.key[8:]] = json.loads(entry.value)
            except json.JSONDecodeError:
                out[entry.key[8:]] = entry.value
    return out
