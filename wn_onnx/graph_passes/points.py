"""Noise points: which activations of a graph can carry noise, and user selection of them.

A point is a float activation: a float graph input, or the float output of a compute node. Pure
layout/shape ops (unless they bring constant values into the data path, as an embedding lookup
does), integer tensors, scalars (such as dynamic quantization's scales: no sample axis),
initializers and anything computed from constants or shapes alone (an attention scale
Sqrt(Cast(Shape(x))): no per-sample data, whatever its rank) are never points. Indices follow graph
order and stay fixed whatever ``--at`` selects, so reports from different selections of one
model line up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx_ir as ir

from wn_onnx.errors import ConfigError
from wn_onnx.io.vocabulary import FLOAT_TYPES, LAYOUT_OPS, USER_VALUE


@dataclass(frozen=True)
class Point:
    """One place noise can be injected."""

    index: int
    tensor: str
    op_type: str  # producing op, "Input" for a graph input
    node: str  # producing node's name ("" for inputs)
    shape: tuple[int | str | None, ...] | None

    def to_json(self) -> dict:
        return {"index": self.index, "tensor": self.tensor, "op_type": self.op_type, "node": self.node,
                "shape": _shape_json(self.shape)}  # fmt: skip


def _shape_json(shape: tuple | None) -> list | None:
    return None if shape is None else list(shape)


def _shape(value: ir.Value) -> tuple[int | str | None, ...] | None:
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else (d.value if d.value is not None else None) for d in value.shape)


def data_dependent(graph: ir.Graph) -> set[ir.Value]:
    """Values that depend on a graph input (others are constants, folded or not)."""
    live = {v for v in graph.inputs if not v.is_initializer()}
    for node in graph:  # graph iteration is topological
        if any(v in live for v in node.inputs if v is not None) or (not node.inputs and node.op_type != "Constant"):
            live.update(node.outputs)
    return live


# Ops whose result depends on the shape of their input only, never on its values.
SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "EyeLike", "RandomNormalLike", "RandomUniformLike"})


def sample_dependent(graph: ir.Graph) -> set[ir.Value]:
    """Values computed from the values of a graph input (not from its shape or constants alone)."""
    live = {v for v in graph.inputs if not v.is_initializer()}
    for node in graph:
        if node.op_type in SHAPE_OPS and node.domain in ("", "ai.onnx"):
            continue
        if any(v in live for v in node.inputs if v is not None):
            live.update(node.outputs)
    return live


def find_points(model: ir.Model) -> list[Point]:
    """All default noise points of ``model`` (shape-inferred), in graph order."""
    graph = model.graph
    live = sample_dependent(graph)
    outputs = set(graph.outputs)
    points: list[Point] = []
    named = {v.name: v for n in graph for v in n.outputs}

    def add(value: ir.Value, op_type: str, node: str) -> None:
        scalar = value.shape is not None and len(value.shape) == 0  # a batch statistic, not per-sample values
        if value.dtype in FLOAT_TYPES and value in live and (value.uses() or value in outputs) and not scalar:
            at = named.get(value.metadata_props.get(USER_VALUE, ""), value)
            points.append(Point(len(points), at.name or "", op_type, node, _shape(at)))

    for value in graph.inputs:
        if not value.is_initializer():
            add(value, "Input", "")
    for node in graph:
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
            add(value, node.op_type, node.name or "")
    return points


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
