"""Models exported with a fixed batch size (torch's default without ``dynamic_axes``).

Running such a model in batches of 1 or 2 is slow and rules out stacking σ values, yet often
the number is only a declaration: the graph itself takes any batch. Then the batch axis is
freed — but only after checking numerically that nothing changes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

FREE_DIM = "N"


def fixed_batch(proto: onnx.ModelProto) -> int | None:
    """The batch size the data input declares, when it is a number."""
    inputs = _data_inputs(proto)
    dims = inputs[0].type.tensor_type.shape.dim if len(inputs) == 1 else []
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None


def free_batch_axis(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``proto`` whose input and outputs take any batch size, or None when the fixed
    size is baked into the graph (Reshape targets, batch-shaped constants, statistics over the
    batch) or the input has other non-numeric dimensions.

    The check: 2·B random samples in one run of the copy must give, row for row, what runs of B
    samples give with the original."""
    batch = fixed_batch(proto)
    if batch is None:
        return None
    (value,) = _data_inputs(proto)
    dims = value.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims[1:]):
        return None
    freed = onnx.ModelProto()
    freed.CopyFrom(proto)
    del freed.graph.value_info[:]  # shapes inferred for the fixed batch
    for v in [*_data_inputs(freed), *freed.graph.output]:
        shape = v.type.tensor_type.shape
        if len(shape.dim) and shape.dim[0].HasField("dim_value") and shape.dim[0].dim_value == batch:
            shape.dim[0].dim_param = FREE_DIM
    try:
        freed = shape_inference.infer_shapes(freed)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape, rng = (2 * batch, *(d.dim_value for d in dims[1:])), np.random.default_rng(0)
        # small integers for integer inputs: valid token ids and pixel values alike
        x = (rng.integers(0, 2, shape) if np.dtype(dtype).kind in "iu" else rng.standard_normal(shape)).astype(dtype)
        original = _session(proto)
        want = [
            np.concatenate(parts) for parts in zip(_run(original, x[:batch]), _run(original, x[batch:]), strict=True)
        ]
        got = _run(_session(freed), x)
    except Exception:  # the copy does not run with another batch: the size is baked in
        return None
    for a, b in zip(want, got, strict=True):
        scale = float(np.nanmax(np.abs(a), initial=0)) or 1.0
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True):
            return None
    return freed


def _data_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializers]


def _session(proto: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing run is an expected answer here, not news
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    return session.run(None, {session.get_inputs()[0].name: x}, run_options)
