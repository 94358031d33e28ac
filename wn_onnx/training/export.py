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
    with warnings.catch_warnings():  # not under no_grad: torch would export its fused encoder kernel
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


EXPORT_RTOL = 1e-4  # ONNX vs torch: |Δlogit| ≤ 1e-4 · max|logit| (float32 reassociation grows with the logits)


def max_export_error(model: torch.nn.Module, path: str | Path, x: np.ndarray) -> float:
    """Largest |ONNX − torch eval| over inputs ``x``."""
    return export_difference(model, path, x)[0]


def export_difference(model: torch.nn.Module, path: str | Path, x: np.ndarray) -> tuple[float, float, bool]:
    """(largest |ONNX − torch eval|, largest |torch logit|, whether every top-1 prediction agrees) on ``x``."""
    import onnxruntime as ort

    model.eval()
    x = np.ascontiguousarray(x, np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x).to(next(model.parameters()).device)).cpu().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    same = bool(np.array_equal(got.argmax(axis=-1), ref.argmax(axis=-1)))
    return float(np.abs(got - ref).max()), float(np.abs(ref).max()), same


def verified_export(
    model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path, metadata: dict | None, x: np.ndarray
) -> float:
    """Export, then compare with torch on ``x``; the file appears at ``path`` only when the export
    matches (within ``EXPORT_RTOL`` relative to the largest logit, and the same predictions) — a
    failed check leaves nothing behind. Returns the largest relative difference."""
    from wn_onnx.errors import WnError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        export_onnx(model, input_shape, tmp, metadata)
        error, scale, same = export_difference(model, tmp, x)
        relative = error / max(scale, 1e-12)
        if not same or not relative <= EXPORT_RTOL:  # NaN fails too
            why = "top-1 predictions differ" if not same else f"> {EXPORT_RTOL:g}"
            raise WnError(
                f"exported model differs from torch by {error:.2e} ({relative:.1e} of the largest logit {scale:.3g}; "
                f"{why}); not trusting it, nothing written"
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return relative


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
