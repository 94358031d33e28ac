"""Noise points: which activations of a graph can carry noise, and user selection of them.

A point is a float activation: a float graph input, or the float output of a compute node. Pure
layout/shape ops (unless they bring constant values into the data path, as an embedding lookup
does), integer tensors, scalars (such as dynamic quantization's scales: no sample axis),
initializers and anything computed from constants, shapes or such scalars alone (an attention
scale Sqrt(Cast(Shape(x))), a dynamically quantized layer's per-channel scale: no per-sample
data, whatever its rank) are never points. Indices follow graph
order and stay fixed whatever ``--at`` selects, so reports from different selections of one
model line up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx_ir as ir

from wn_onnx.errors import ConfigError, WnError
from wn_onnx.graph_passes.layers import label, layer_groups
from wn_onnx.io.vocabulary import FLOAT_TYPES, LAYOUT_OPS, USER_VALUE

GRANULARITIES = ("layer", "op")


@dataclass(frozen=True)
class Point:
    """One place noise can be injected."""

    index: int
    tensor: str
    op_type: str  # producing op, "Input" for a graph input; at layer granularity the function's name
    node: str  # producing node's name ("" for inputs)
    shape: tuple[int | str | None, ...] | None
    ops: tuple[str, ...] = ()  # layer granularity: the ops this point stands for, when more than one
    path: str = ""  # inside control flow: the node and attribute holding it, e.g. "If_0/then_branch"
    unsupported: str = ""  # why noise cannot be put here yet (a scan skips the point with this reason)

    def to_json(self) -> dict:
        out = {"index": self.index, "tensor": self.tensor, "op_type": self.op_type, "node": self.node,
               "shape": _shape_json(self.shape)}  # fmt: skip
        extra = {"ops": list(self.ops), "path": self.path, "unsupported": self.unsupported}
        return out | {k: v for k, v in extra.items() if v}


def _shape_json(shape: tuple | None) -> list | None:
    return None if shape is None else list(shape)


def _shape(value: ir.Value) -> tuple[int | str | None, ...] | None:
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else (d.value if d.value is not None else None) for d in value.shape)


def subgraphs(node: ir.Node) -> list[tuple[str, ir.Graph]]:
    """(attribute name, graph) of each body of a control-flow node (If, Loop, Scan)."""
    found: list[tuple[str, ir.Graph]] = []
    for name, attr in node.attributes.items():
        if attr.type == ir.AttributeType.GRAPH:
            found.append((name, attr.as_graph()))
        elif attr.type == ir.AttributeType.GRAPHS:
            found += [(f"{name}[{i}]", g) for i, g in enumerate(attr.as_graphs())]
    return found


def _propagate(graph: ir.Graph, live: set[ir.Value], skip: frozenset[str], sources: bool, scalars: bool = True) -> None:
    """Add to ``live`` what ``graph``'s nodes compute from it, into control-flow bodies too: a
    body sees its node's live inputs as its own inputs, and outer values by reference.
    ``skip``: ops whose result never depends on their inputs' values; ``sources``: nodes
    without inputs (other than Constant) count as data; ``scalars`` False: a rank-0 result is
    not live (a statistic of the whole batch, not values of its samples)."""
    for node in graph:
        if node.op_type in skip and node.domain in ("", "ai.onnx"):
            continue
        reads = any(v in live for v in node.inputs if v is not None)
        reads = reads or (sources and not node.inputs and node.op_type != "Constant")
        for _, body in subgraphs(node):
            if reads:
                live.update(body.inputs)
            _propagate(body, live, skip, sources, scalars)
            reads = reads or any(v in live for v in body.outputs)
        if reads:
            live.update(v for v in node.outputs if scalars or v.shape is None or len(v.shape) > 0)


def data_dependent(graph: ir.Graph) -> set[ir.Value]:
    """Values that depend on a graph input (others are constants, folded or not)."""
    live = {v for v in graph.inputs if not v.is_initializer()}
    _propagate(graph, live, frozenset(), sources=True)
    return live


# Ops whose result depends on the shape of their input only, never on its values.
SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "EyeLike", "RandomNormalLike", "RandomUniformLike"})


def sample_dependent(graph: ir.Graph) -> set[ir.Value]:
    """Values computed from the values of a graph input: not from its shape or constants alone,
    nor from batch-wide scalars and constants alone — dynamic quantization's per-channel scales,
    the batch's scale times the weights' ([C], computed anew for every batch), hold no sample's
    values and noise there is no noise on an activation."""
    live = {v for v in graph.inputs if not v.is_initializer()}
    _propagate(graph, live, SHAPE_OPS, sources=False, scalars=False)
    return live


def batch_values(model: ir.Model) -> list[dict]:
    """The float values that change with the data but hold no sample's values — computed from
    its shapes, batch-wide scalars (dynamic quantization's scale) and constants alone — and so
    are no points: tensor, producing op and shape of each, in graph order (``points --all``)."""
    graph = model.graph
    data, samples = data_dependent(graph), sample_dependent(graph)
    return [
        {"tensor": v.name or "", "op_type": node.op_type, "shape": _shape_json(_shape(v))}
        for node in graph
        for v in node.outputs
        if v.dtype in FLOAT_TYPES and v in data and v not in samples and (v.uses() or v.is_graph_output())
    ]


# Control-flow bodies whose points cannot carry noise yet, and why.
UNSUPPORTED_BODY = {
    "Loop": "inside a Loop body: noise per iteration is not supported yet",
    "Scan": "inside a Scan body: noise per iteration is not supported yet",
}


def find_points(model: ir.Model, granularity: str = "op") -> list[Point]:
    """All default noise points of ``model`` (shape-inferred), in graph order; those inside
    control-flow bodies just before the node holding them.

    ``granularity="op"``: one point per computing op. ``"layer"``: one per compute layer or
    activation / normalisation function, however many ops the exporter wrote it as
    (graph_passes.layers; docs/method.md, "Granularity").
    """
    if granularity not in GRANULARITIES:
        raise WnError(f"unknown granularity {granularity!r}; use layer or op")
    graph = model.graph
    live = sample_dependent(graph)
    named = {v.name: v for n in graph for v in n.outputs}
    found: list[tuple[ir.Value, str, str, tuple[str, ...], str, str]] = []

    def add(value: ir.Value, op_type: str, node: str, ops: tuple[str, ...], path: str, why: str) -> None:
        scalar = value.shape is not None and len(value.shape) == 0  # a batch statistic, not per-sample values
        used = value.uses() or value.is_graph_output()
        if value.dtype in FLOAT_TYPES and value in live and used and not scalar:
            found.append((named.get(value.metadata_props.get(USER_VALUE, ""), value), op_type, node, ops, path, why))

    def walk(g: ir.Graph, path: str, why: str) -> None:
        groups = layer_groups(g, live) if granularity == "layer" else {}
        for node in g:
            for attr, body in subgraphs(node):
                inner = f"{path}{node.name or node.op_type}/{attr}"
                walk(body, f"{inner}/", why or UNSUPPORTED_BODY.get(node.op_type, ""))
            group = groups.get(node)
            if group is not None:
                if group.exit in node.outputs:
                    add(group.exit, label(group.nodes), node.name or "", tuple(n.op_type for n in group.nodes),
                        path.rstrip("/"), why)  # fmt: skip
                continue
            floats = [v for v in node.inputs if v is not None and v.dtype in FLOAT_TYPES]
            # a layout op repeats its producers' values, unless those are all constants: an embedding
            # lookup (Gather of a table by token ids) is where such values enter the data path
            if (
                node.op_type in LAYOUT_OPS
                and node.domain in ("", "ai.onnx")
                and (not floats or any(v in live for v in floats))
            ):
                continue
            for value in node.outputs:
                add(value, node.op_type, node.name or "", (), path.rstrip("/"), why)

    for value in graph.inputs:
        if not value.is_initializer():
            add(value, "Input", "", (), "", "")
    walk(graph, "", "")
    return [
        Point(i, v.name or "", op, node, _shape(v), ops, path, why)
        for i, (v, op, node, ops, path, why) in enumerate(found)
    ]


_RANGE = re.compile(r"^(\d+)?(?:-|:)(\d+)?$")


def parse_indices(at: str, count: int) -> list[int]:
    """The point indices ``at`` names among ``count`` points: ``0,3,5-8``, open ranges ``5-``/``-3``
    refused as ambiguous. The index part of every command's point selection (scan's ``--at``, check
    configs, train's noisy points)."""
    wanted: set[int] = set()
    for part in at.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("-") and part[1:].isdigit():  # -3: "the third from the end" or "up to 3"?
            raise ConfigError(f"point selection {at!r}: {part} is ambiguous; write an index from 0 or a "
                              f"range such as 0{part} or {max(count + int(part), 0)}-{count - 1}")  # fmt: skip
        m = _RANGE.match(part)
        if part.isdigit():
            wanted.add(int(part))
        elif m:
            lo = int(m.group(1)) if m.group(1) else 0
            hi = int(m.group(2)) if m.group(2) else count - 1
            wanted.update(range(lo, min(hi, count) + 1))  # past the end: reported below, not built
        else:
            raise ConfigError(f"point selection {at!r}: use indices (0,3,5-8), op:TYPE[,TYPE] or re:PATTERN")
    bad = sorted(i for i in wanted if not 0 <= i < count)
    if bad:
        raise ConfigError(f"point selection {at!r}: point index {bad[0]} out of range ({count} points: 0-{count - 1})")
    return sorted(wanted)


def select_points(points: list[Point], at: str | None) -> list[Point]:
    """Subset of ``points`` chosen by ``at``.

    ``None`` or ``all``: every point. ``0,3,5-8``: indices and inclusive ranges. ``op:Conv,Gemm``:
    by producing op type. ``re:PATTERN``: regex searched in the tensor and node names.
    """
    if at is None or at.strip() in ("", "all"):
        chosen = list(points)
    elif at.startswith("op:"):
        ops = {o.strip().lower() for o in at[3:].split(",") if o.strip()}
        chosen = [p for p in points if p.op_type.lower() in ops]
    elif at.startswith("re:"):
        try:
            pattern = re.compile(at[3:])
        except re.error as err:
            raise ConfigError(f"point selection {at!r}: invalid regular expression ({err})") from None
        chosen = [p for p in points if pattern.search(p.tensor) or pattern.search(p.node)]
    else:
        wanted = set(parse_indices(at, len(points)))
        chosen = [p for p in points if p.index in wanted]
    if not chosen:
        raise ConfigError(f"point selection {at!r} selects no noise point (see `wn-onnx points MODEL`)")
    return chosen
