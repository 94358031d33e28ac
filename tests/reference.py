"""A plain reference evaluator: noise put into the user's own file with ordinary onnx edits, the
whole graph run by onnxruntime, nothing cached, stacked, carried or padded by the engine.

Every consumer of a noisy tensor T reads ``T + σ_a·Z``, ``T·(1 + σ_m·Z)`` or the mixed forms,
written with plain Add/Mul nodes. Z comes from the engine's seeded draws (the same numbers for
the same sample), so the engine's shortcuts must reproduce these predictions. The batch axis of
each tensor is found here independently, by running two batch sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from wn_onnx.engine.draws import draw_at
from wn_onnx.noise import NoiseSpec


def _session(proto: onnx.ModelProto, fuse: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not fuse:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def noisy_proto(proto: onnx.ModelProto, tensors: dict[str, np.dtype], spec: NoiseSpec) -> onnx.ModelProto:
    """``proto`` with noise after ``tensors`` (name → dtype); new inputs ``ref_z_{k}``, ``ref_z2_{k}``
    and the scalars ``ref_sa_{k}``, ``ref_sm_{k}`` (in the tensor's dtype)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    for k, (name, dtype) in enumerate(tensors.items()):
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        noisy = f"{name}__ref_noisy"
        for node in graph.node:
            node.input[:] = [noisy if i == name else i for i in node.input]
        for v in graph.output:
            if v.name == name:
                v.name = noisy
        z, z2, sa, sm, one = (f"ref_{p}_{k}" for p in ("z", "z2", "sa", "sm", "one"))
        graph.input.extend(helper.make_tensor_value_info(n, elem, None) for n in (z, z2)[: spec.draws])
        graph.input.extend(helper.make_tensor_value_info(n, elem, []) for n in (sa, sm))
        graph.initializer.append(onnx.numpy_helper.from_array(np.ones((), dtype), one))

        t = f"ref_t_{k}"
        if spec.kind == "add":
            nodes = _add(name, z, sa, noisy)
        elif spec.kind == "mul":
            nodes = _mul(name, z, sm, one, noisy)
        elif spec.order == "mul-first":
            nodes = _mul(name, z, sm, one, t) + _add(t, z2, sa, noisy)
        else:
            nodes = _add(name, z, sa, t) + _mul(t, z2, sm, one, noisy)
        graph.node.extend(nodes)
    return _toposort(out)


def _add(x: str, z: str, sa: str, out: str) -> list[onnx.NodeProto]:
    """x + σ_a·z"""
    return [helper.make_node("Mul", [sa, z], [f"{out}_s"]), helper.make_node("Add", [x, f"{out}_s"], [out])]


def _mul(x: str, z: str, sm: str, one: str, out: str) -> list[onnx.NodeProto]:
    """x·(1 + σ_m·z)"""
    return [
        helper.make_node("Mul", [sm, z], [f"{out}_s"]),
        helper.make_node("Add", [one, f"{out}_s"], [f"{out}_f"]),
        helper.make_node("Mul", [x, f"{out}_f"], [out]),
    ]


def _toposort(proto: onnx.ModelProto) -> onnx.ModelProto:
    graph = proto.graph
    ready = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("cycle or missing input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return proto


class Reference:
    """The user's model file, evaluated plainly."""

    def __init__(self, path: Path, output: str | None = None, fuse: bool = True) -> None:
        self.fuse = fuse  # onnxruntime's fusions (off: the graph's arithmetic exactly as written)
        self.proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        self.input = self.proto.graph.input[0].name
        outs = [v.name for v in self.proto.graph.output]
        self.out_index = outs.index(output) if output else 0
        dim = self.proto.graph.input[0].type.tensor_type.shape.dim[0]
        self.fixed = dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
        self._taps: dict[tuple[str, ...], ort.InferenceSession] = {}

    def values(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        """Clean values ``names`` on ``x``."""
        if tuple(names) not in self._taps:
            proto = onnx.ModelProto()
            proto.CopyFrom(self.proto)
            proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
            self._taps[tuple(names)] = _session(proto, self.fuse)
        return self._taps[tuple(names)].run(names, {self.input: x})

    def batch_axes(self, names: list[str], x: np.ndarray) -> list[int | None]:
        """Per tensor: the axis whose length is the number of samples (2 and 3 tried), else None."""
        if self.fixed:
            return [0 if v.shape[:1] == (self.fixed,) else None for v in self.values(names, x[: self.fixed])]
        two, three = self.values(names, x[:2]), self.values(names, x[:3])
        axes = []
        for a, b in zip(two, three, strict=True):
            moved = [i for i in range(a.ndim) if a.shape[i] != b.shape[i]]
            axes.append(moved[0] if len(moved) == 1 and (a.shape[moved[0]], b.shape[moved[0]]) == (2, 3) else None)
        return axes

    def counts(
        self,
        tensors: list[tuple[int, str]],
        x: np.ndarray,
        y: np.ndarray,
        sigmas: np.ndarray,
        spec: NoiseSpec,
        repeats: int,
        seed: int,
        stream: int,
        batch_size: int,
        scales: list[float] | None = None,
    ) -> np.ndarray:
        """Correct predictions per (σ, repeat) with noise ``σ`` at every (point index, tensor) of
        ``tensors`` at once (``scales``: σ·scales[k] at the k-th); batches as the engine makes
        them (a fixed batch padded, pads unscored)."""
        names = [t for _, t in tensors]
        dtypes = {n: v.dtype for n, v in zip(names, self.values(names, x[: self.fixed or 2]), strict=True)}
        session = _session(noisy_proto(self.proto, dtypes, spec), self.fuse)
        axes = self.batch_axes(names, x)
        size = self.fixed or batch_size
        correct = np.zeros((len(sigmas), repeats), np.int64)
        for b, start in enumerate(range(0, len(x), size)):
            xb, yb = x[start : start + size], y[start : start + size]
            if self.fixed and len(xb) < size:
                yb = np.concatenate([yb, np.full(size - len(xb), -1)])
                xb = np.concatenate([xb, np.repeat(xb[-1:], size - len(xb), axis=0)])
            clean = self.values(names, xb)
            for r in range(repeats):
                feeds = {self.input: xb}
                for k, ((index, _), v, axis) in enumerate(zip(tensors, clean, axes, strict=True)):
                    zs = draw_at(seed, stream, (index, r), v.shape, axis, spec.draws, v.dtype, start, b)
                    feeds.update(zip((f"ref_z_{k}", f"ref_z2_{k}"), zs, strict=False))
                for s, sigma in enumerate(sigmas):
                    sa, sm = spec.components(sigma)
                    for k, v in enumerate(clean):
                        scale = 1.0 if scales is None else scales[k]
                        feeds[f"ref_sa_{k}"] = np.asarray(sa * scale, v.dtype)
                        feeds[f"ref_sm_{k}"] = np.asarray(sm * scale, v.dtype)
                    with np.errstate(all="ignore"):
                        logits = session.run(None, feeds)[self.out_index].astype(np.float64)
                        flat = logits.reshape(len(xb), -1)
                        pred = np.argmax(np.where(np.isfinite(flat), flat, -np.inf), axis=1)
                    correct[s, r] += int(((pred == yb) & np.isfinite(flat).all(axis=1)).sum())
        return correct
