"""A plain reference evaluator: noise put into the user's own file with ordinary onnx edits, the
whole graph run by onnxruntime, nothing cached, stacked, carried or padded by the engine.

Every consumer of a noisy tensor T reads ``T + σ_a·Z``, ``T·(1 + σ_m·Z)`` or the mixed forms,
written with plain Add/Mul nodes. Z comes from the seeded draws (the same numbers for
the same sample), so the engine's shortcuts must reproduce these predictions. The batch axis of
each tensor is found here independently, by running two batch sizes.

Several inputs are given as ``{name: (array, axis)}``: the array in the graph's layout, its
samples on ``axis`` (None: the same value for every batch). Walk noise (WALK_STREAM) is built
here from its definition (:func:`walk_z`) rather than taken from the engine's draws. Scores are computed here too,
plainly (:func:`scores`): top1, binary and per-position, with labels or against the clean run;
or by a plug-in's function on the outputs exactly as onnxruntime returns them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from wn_onnx.engine.draws import PER_BATCH, WALK_STREAM, draw_at
from wn_onnx.noise import NoiseSpec


def walk_z(seed: int, r: int, v: np.ndarray, axis: int | None, count: int, start: int, batch: int) -> list[np.ndarray]:
    """Walk noise for value ``v`` (samples ``start…`` on ``axis``) in repeat ``r``, from its
    definition: sample i's numbers are the first ones of generator [seed, WALK_STREAM, r, i], in
    the order of the sample's own values, the second array (mixed noise) after the first; a value
    without a sample axis takes one generator for the batch."""
    if axis is None:
        rng = np.random.default_rng([seed, WALK_STREAM, r, PER_BATCH, batch])
        return [rng.standard_normal(v.shape, dtype=np.float32).astype(v.dtype) for _ in range(count)]
    rows = np.moveaxis(v, axis, 0)
    per = rows[0].size
    numbers = [np.random.default_rng([seed, WALK_STREAM, r, start + i]).standard_normal(count * per, dtype=np.float32)
               for i in range(len(rows))]  # fmt: skip
    return [np.moveaxis(np.stack([n[c * per : (c + 1) * per].reshape(rows.shape[1:]) for n in numbers]), 0, axis).astype(v.dtype)
            for c in range(count)]  # fmt: skip


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


Inputs = np.ndarray | dict[str, tuple[np.ndarray, int | None]]


def scores(metric: str, out: np.ndarray, clean: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Per-sample scores, written out plainly; a sample with a non-finite output scores 0."""
    n = len(out)
    with np.errstate(all="ignore"):
        finite = np.isfinite(out.reshape(n, -1)).all(axis=1)
        if metric == "top1":
            flat, ref = out.reshape(n, -1), clean.reshape(n, -1)
            target = ref.argmax(axis=1) if labels is None else labels.reshape(n)
            got = (np.where(np.isfinite(flat), flat, -np.inf).argmax(axis=1) == target).astype(float)
        elif metric == "binary":
            target = (clean > 0.5).reshape(n, -1) if labels is None else labels.reshape(n, -1)
            got = ((out > 0.5).reshape(n, -1) == target).mean(axis=1)
        else:  # per-position: classes on the last axis
            target = clean.argmax(axis=-1) if labels is None else labels
            pred = np.where(np.isfinite(out), out, -np.inf).argmax(axis=-1)
            got = (pred == target).reshape(n, -1).mean(axis=1)
    return np.where(finite, got, 0.0)


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

    def feeds(self, x: Inputs, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for samples ``rows``."""
        if isinstance(x, np.ndarray):
            return {self.input: x[rows]}
        return {k: a if axis is None else np.take(a, rows, axis=axis) for k, (a, axis) in x.items()}

    @staticmethod
    def samples(x: Inputs) -> int:
        if isinstance(x, np.ndarray):
            return len(x)
        return next(a.shape[axis] for a, axis in x.values() if axis is not None)

    def values(self, names: list[str], x: Inputs, rows: np.ndarray) -> list[np.ndarray]:
        """Clean values ``names`` on samples ``rows`` of ``x``."""
        if tuple(names) not in self._taps:
            proto = onnx.ModelProto()
            proto.CopyFrom(self.proto)
            present = {v.name for v in proto.graph.output}
            proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
            self._taps[tuple(names)] = _session(proto, self.fuse)
        return self._taps[tuple(names)].run(names, self.feeds(x, rows))

    def batch_axes(self, names: list[str], x: Inputs) -> list[int | None]:
        """Per tensor: the axis whose length is the number of samples (2 and 3 tried), else None."""
        if self.fixed:
            values = self.values(names, x, np.arange(self.fixed))
            return [0 if v.shape[:1] == (self.fixed,) else None for v in values]
        two, three = self.values(names, x, np.arange(2)), self.values(names, x, np.arange(3))
        axes = []
        for a, b in zip(two, three, strict=True):
            moved = [i for i in range(a.ndim) if a.shape[i] != b.shape[i]]
            axes.append(moved[0] if len(moved) == 1 and (a.shape[moved[0]], b.shape[moved[0]]) == (2, 3) else None)
        return axes

    def counts(
        self,
        tensors: list[tuple[int, str]],
        x: Inputs,
        y: np.ndarray | None,
        sigmas: np.ndarray,
        spec: NoiseSpec,
        repeats: int,
        seed: int,
        stream: int,
        batch_size: int,
        scales: list[float] | None = None,
        metric: str = "top1",
        plugin: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Summed scores (correct predictions, for top1) per (σ, repeat) with noise ``σ`` at every
        (point index, tensor) of ``tensors`` at once (``scales``: σ·scales[k] at the k-th); ``y``
        None: agreement with the clean run; batches as the engine makes them (a fixed batch padded,
        pads unscored). ``plugin(clean, noisy, labels)``: scores computed from the whole runs'
        outputs as onnxruntime returns them (no fixed batch: nothing to unpad) instead of ``metric``."""
        names = [t for _, t in tensors]
        n = self.samples(x)
        dtypes = {k: v.dtype for k, v in zip(names, self.values(names, x, np.arange(self.fixed or 2)), strict=True)}
        session = _session(noisy_proto(self.proto, dtypes, spec), self.fuse)
        clean_session = _session(self.proto, self.fuse)
        axes = self.batch_axes(names, x)
        size = self.fixed or batch_size
        total = np.zeros((len(sigmas), repeats))
        for b, start in enumerate(range(0, n, size)):
            real = min(size, n - start)
            rows = np.minimum(np.arange(start, start + size if self.fixed else start + real), start + real - 1)
            yb = None if y is None else y[start : start + real]
            clean = self.values(names, x, rows)
            whole = clean_session.run(None, self.feeds(x, rows))[self.out_index]
            reference = whole[:real]
            for r in range(repeats):
                feeds = self.feeds(x, rows)
                for k, ((index, _), v, axis) in enumerate(zip(tensors, clean, axes, strict=True)):
                    if stream == WALK_STREAM:
                        zs = walk_z(seed, r, v, axis, spec.draws, start, b)
                    else:
                        zs = draw_at(seed, stream, (index, r), v.shape, axis, spec.draws, v.dtype, start, b)
                    feeds.update(zip((f"ref_z_{k}", f"ref_z2_{k}"), zs, strict=False))
                for s, sigma in enumerate(sigmas):
                    sa, sm = spec.components(sigma)
                    for k, v in enumerate(clean):
                        scale = 1.0 if scales is None else scales[k]
                        feeds[f"ref_sa_{k}"] = np.asarray(sa * scale, v.dtype)
                        feeds[f"ref_sm_{k}"] = np.asarray(sm * scale, v.dtype)
                    with np.errstate(all="ignore"):
                        raw = session.run(None, feeds)[self.out_index]
                    if plugin is not None:
                        total[s, r] += np.asarray(plugin(whole, raw, yb), np.float64).sum()
                        continue
                    total[s, r] += scores(metric, raw[:real].astype(np.float64), reference, yb).sum()
        return total
