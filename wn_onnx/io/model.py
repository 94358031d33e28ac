"""Loading a user's ONNX file safely and describing its interface.

Every failure becomes a one-line :class:`WnError`: missing file, not ONNX, checker failure,
external data that points outside the model's folder (refused before anything is read).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError
from onnx import shape_inference, version_converter
from onnx_ir.passes.common import RemoveUnusedNodesPass

from wn_onnx.errors import ModelError
from wn_onnx.io.batch_axis import fixed_batch, free_batch_axis
from wn_onnx.io.safeio import regular_file
from wn_onnx.io.vocabulary import FLOAT_TYPES, LAYOUT_OPS, MIN_OPSET, RESERVED_PREFIX, USER_VALUE

INTEGER_TYPES = frozenset(
    {ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64,
     ir.DataType.UINT8, ir.DataType.UINT16, ir.DataType.UINT32, ir.DataType.UINT64}
)  # fmt: skip


@dataclass
class LoadedModel:
    """A checked, shape-inferred model plus the facts a scan needs about it."""

    path: str
    model: ir.Model
    input_name: str
    output_name: str
    num_classes: int
    input_shape: tuple  # declared input shape, symbolic dims as str/None
    freed_batch: int | None = None  # the file's fixed batch, when the graph was checked to take any
    external: tuple[str, ...] = ()  # external data files the weights were read from
    inputs: dict[str, tuple[tuple, np.dtype]] = field(default_factory=dict)  # every graph input: (shape, dtype)
    weights_folded: bool = False  # weights computed from constants made initializers (graph_passes/fold_weights.py)

    def content_digest(self) -> str:
        """Hash of the model file and its external data files: what the numbers depend on."""
        h = hashlib.sha256()
        for name in (self.path, *self.external):
            with open(name, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\x00")
        return h.hexdigest()

    @property
    def output_shape(self) -> str:
        """The scored output's declared shape, as text (``?`` for an unnamed dimension)."""
        value = next((v for v in self.model.graph.outputs if v.name == self.output_name), None)
        if value is None or value.shape is None:
            return "unknown"
        return "×".join(str(d) if isinstance(d, int) else (d.value or "?") for d in value.shape) or "scalar"

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the input (an export without a dynamic batch axis), else None."""
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) else None

    def fresh(self, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> ir.Model:
        """A private copy to run passes on (passes work in place): parsed from the model serialized
        once, since a scan derives a few graphs per point. With ``outputs``: only the part that
        computes them from ``inputs`` is parsed (see :meth:`part`); the caller still cuts it
        (ExtractSuffixPass), which a graph with control flow needs."""
        part = self.part(inputs, outputs) if outputs else None
        return ir.from_proto(part if part is not None else onnx.ModelProto.FromString(self._serialized))

    def part(self, inputs: Sequence[str], outputs: Sequence[str]) -> onnx.ModelProto | None:
        """The graph cut to the nodes that compute ``outputs`` from ``inputs`` (its inputs: those,
        then any other graph input reached), copied node by node from the serialized model: a
        point's prefix or suffix of a chain of 50,000 nodes costs its own size, not the whole
        graph's (docs/design.md, "Long graphs"). None for a graph with control flow, whose bodies read
        values of the enclosing graph that no node input names."""
        if self._parts is None:
            return None
        head, node_index, values, initializers, value_info = self._parts
        stop, keep, seen, frontier = set(inputs), set(), set(), [values[n] for n in outputs]
        reached_inputs = []
        while frontier:
            value = frontier.pop()
            if value in seen:
                continue
            seen.add(value)
            node = value.producer()
            if value.name in stop or node is None:
                if not value.is_initializer():
                    reached_inputs.append(value.name)
                continue
            keep.add(node)
            frontier.extend(v for v in node.inputs if v is not None)
        small = onnx.ModelProto()
        small.CopyFrom(head)
        graph, base = small.graph, self.proto.graph
        graph.node.extend(base.node[i] for i in sorted(node_index[n] for n in keep))
        graph.initializer.extend(initializers[v.name] for v in seen if v.name in initializers)
        graph.sparse_initializer.extend(base.sparse_initializer)
        names = dict.fromkeys([*inputs, *reached_inputs])
        graph.input.extend(ir.serde.serialize_value(values[n]) for n in names)
        graph.output.extend(ir.serde.serialize_value(values[n]) for n in outputs)
        produced = (o.name for n in keep for o in n.outputs)
        graph.value_info.extend(value_info[n] for n in produced if n in value_info and n not in names)
        return small

    @functools.cached_property
    def proto(self) -> onnx.ModelProto:
        """The model as a protobuf, parsed once (sessions of the whole graph are built from it): not to be modified."""
        return onnx.ModelProto.FromString(self._serialized)

    @functools.cached_property
    def _parts(self) -> tuple | None:
        """What :meth:`fresh` copies a part of the graph from: the model without its graph, each
        node's position in the serialized graph, values, initializers and value infos by name."""
        graph = self.model.graph
        if any(
            a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for n in graph for a in n.attributes.values()
        ):
            return None
        head = onnx.ModelProto()
        head.CopyFrom(self.proto)
        head.graph.Clear()
        head.graph.name = self.proto.graph.name
        values = {v.name: v for v in (*graph.inputs, *graph.initializers.values()) if v.name}
        values.update({v.name: v for n in graph for v in n.outputs if v.name})
        return (
            head,
            {n: i for i, n in enumerate(graph)},
            values,
            {t.name: t for t in self.proto.graph.initializer},
            {v.name: v for v in self.proto.graph.value_info},
        )

    @functools.cached_property
    def _serialized(self) -> bytes:
        return ir.to_proto(self.model).SerializeToString()


def _check_external_data(proto: onnx.ModelProto, folder: Path) -> tuple[str, ...]:
    """The external data files, each checked to lie inside the model's folder before anything is read."""
    root = folder.resolve()
    files = []
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        where = f"external data file {location[:100]!r} of tensor {tensor.name[:100]!r}"
        try:
            target = (root / location).resolve()
            inside = not os.path.isabs(location) and root in target.parents
            found = inside and target.is_file()
        except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a NUL byte, a name too long
            raise ModelError(f"{where} cannot be opened ({getattr(err, 'strerror', None) or err})") from None
        if not inside:
            raise ModelError(
                f"refusing external data {location!r} of tensor {tensor.name!r}: it lies outside the model's folder"
            )
        if not found:
            raise ModelError(f"{where} not found next to the model")
        files.append(str(target))
    return tuple(dict.fromkeys(files))


def _read(p: Path) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The checked model at ``p`` with its external data, and the external files it read."""
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as err:
        raise ModelError(f"{p} is not a readable ONNX model ({type(err).__name__})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{p} is not an ONNX model (empty graph)")
    external = _check_external_data(proto, p.parent)
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(p.parent))
        onnx.checker.check_model(proto)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{p} fails the ONNX checker: {first}") from None
    return proto, external


def _at_least_min_opset(proto: onnx.ModelProto, p: Path) -> onnx.ModelProto:
    """``proto`` converted to the opset the noise functions need, if it is older."""
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if version >= MIN_OPSET:
        return proto
    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as err:
        raise ModelError(f"{p} uses opset {version}; converting it to {MIN_OPSET} failed ({err})") from None


def load_as_written(path: str | os.PathLike) -> ir.Model:
    """The user's graph as the file has it (every output, the declared batch), only raised to the
    opset the noise functions need: what a deployable copy (``apply-plan``) is built from."""
    p = regular_file(path, "model file")
    proto, _ = _read(p)
    return ir.from_proto(_at_least_min_opset(proto, p))


def load_model(path: str | os.PathLike, output: str | None = None) -> LoadedModel:
    """Read, validate and shape-infer ``path``; ``output``: the graph output to score (default:
    the first float output)."""
    p = regular_file(path, "model file")
    proto, external = _read(p)
    user_names = {o for n in proto.graph.node for o in n.output}
    taken = sorted(n for n in {*user_names, *(v.name for v in proto.graph.input), *(t.name for t in proto.graph.initializer)}
                   if n.startswith(RESERVED_PREFIX))  # fmt: skip
    if taken:
        raise ModelError(
            f"{p}: the model names a value {taken[0]!r}; names starting with {RESERVED_PREFIX!r} are those of the noise "
            "wn-onnx inserts: rename it (a model written by apply-plan holds that noise already: scan the original)"
        )
    proto = _at_least_min_opset(proto, p)
    _free_unsized_dims(proto)
    declared = fixed_batch(proto)
    freed = free_batch_axis(proto) if declared else None
    proto = freed or proto
    try:
        proto = shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:
        pass
    maps = [v.name for v in proto.graph.output if _is_map(v.type)]
    if maps:
        raise ModelError(
            f"{p}: output {maps[0]!r} is a map (ZipMap), not a tensor of class scores; export the classifier "
            "without ZipMap (skl2onnx: options={'zipmap': False})"
        )
    try:
        model = ir.from_proto(proto)
    except Exception as err:  # types onnx_ir cannot represent (e.g. maps from ZipMap)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(f"{p}: cannot be analysed ({first[:200]})") from None
    _mark_renamed_values(model, user_names)
    loaded = describe(model, str(p), output)
    _keep_only_output(model, loaded.output_name)
    loaded.freed_batch = declared if freed is not None else None
    loaded.external = external
    return loaded


def _is_map(t: onnx.TypeProto) -> bool:
    kind = t.WhichOneof("value")
    return kind == "map_type" or (kind == "sequence_type" and _is_map(t.sequence_type.elem_type))


def _mark_renamed_values(model: ir.Model, user_names: set[str]) -> None:
    """Version conversion may split an op and rename its result: Softmax(axis=1) before opset 13
    becomes Flatten → Softmax → Reshape, the Softmax result named ``X_intermediate`` and the
    user's name X moved to the Reshape. Such a value gets the name of the user's value reached
    through layout ops alone (:data:`USER_VALUE`): its point is placed and reported there."""
    for node in model.graph:
        for value in node.outputs:
            if value.name in user_names:
                continue
            target = value
            while target.name not in user_names and len(target.uses()) == 1 and not target.is_graph_output():
                consumer, slot = next(iter(target.uses()))
                if consumer.op_type not in LAYOUT_OPS or slot != 0:
                    break
                target = consumer.outputs[0]
            if target is not value and target.name in user_names:
                value.metadata_props[USER_VALUE] = target.name


def _free_unsized_dims(proto: onnx.ModelProto) -> None:
    """A dimension declared as a number ≤ 0 (PaddlePaddle writes -1 for its batch) is a free one."""
    graph = proto.graph
    for v in [*graph.input, *graph.output, *graph.value_info]:
        for dim in v.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.Clear()


def _keep_only_output(model: ir.Model, name: str) -> None:
    """Drop the other graph outputs and what only they need: noise cannot reach the scored
    output from there, so they hold no points, and they would cost time in every run."""
    graph = model.graph
    if len(graph.outputs) > 1:
        scored = next(v for v in graph.outputs if v.name == name)
        graph.outputs.clear()
        graph.outputs.append(scored)
        RemoveUnusedNodesPass()(model)


def describe(model: ir.Model, path: str, output: str | None = None) -> LoadedModel:
    """Find the inputs and the scored output (``output``, or the first float output). The first
    input is the data input whose batch the others follow (see wn_onnx.data.check_shape)."""
    graph = model.graph
    inputs = [v for v in graph.inputs if not v.is_initializer()]
    if not inputs:
        raise ModelError(f"{path}: the graph has no input")
    for value in inputs:  # integers: token ids, raw pixels, a sample rate; booleans: masks
        if value.dtype not in FLOAT_TYPES | INTEGER_TYPES | {ir.DataType.BOOL}:
            raise ModelError(
                f"{path}: input {value.name!r} is {value.dtype.name if value.dtype else 'untyped'}, "
                "not a float or integer tensor (nor a boolean mask)"
            )
    outs = [v for v in graph.outputs if isinstance(v.type, ir.TensorType) and v.dtype in FLOAT_TYPES]
    if not outs:
        raise ModelError(f"{path}: no float output to score (outputs: {', '.join(v.name for v in graph.outputs)})")
    if output is not None:
        named = [v for v in graph.outputs if v.name == output]
        if not named:
            raise ModelError(
                f"{path}: no graph output {output!r} (outputs: {', '.join(v.name for v in graph.outputs)})"
            )
        if named[0] not in outs:
            raise ModelError(f"{path}: output {output!r} is not a float tensor; it cannot be scored")
    scored = named[0] if output is not None else outs[0]
    dims = list(scored.shape)[1:] if scored.shape is not None else []
    classes = int(np.prod(dims)) if dims and all(isinstance(d, int) for d in dims) else 0
    declared = {
        v.name: (
            tuple(d if isinstance(d, int) else getattr(d, "value", None) for d in v.shape) if v.shape else (),
            np.dtype(ir.DataType(v.dtype).numpy()),
        )
        for v in inputs
    }
    # the data input whose batch the model's is: the first with a free first axis (a state may come first)
    first = next((v.name for v in inputs if declared[v.name][0][:1] and not isinstance(declared[v.name][0][0], int)), inputs[0].name)
    return LoadedModel(path, model, first, scored.name, classes, declared[first][0], inputs=declared)
