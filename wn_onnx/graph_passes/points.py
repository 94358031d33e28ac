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

from wn_onnx.errors import WnError

FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})

# Ops that move, view or re-type data without computing on it: noise after them would duplicate
# the noise already injected after their producer.
LAYOUT_OPS = frozenset(
    {
        "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "CastLike",
        "Shape", "Size", "Constant", "ConstantOfShape", "Gather", "GatherElements", "GatherND",
        "Concat", "Split", "Slice", "Expand", "Tile", "Pad", "Dropout", "DepthToSpace",
        "SpaceToDepth", "Range", "NonZero", "Optional", "OptionalGetElement",
    }
)  # fmt: skip


# Set on a value that conversion renamed (see modelio): the name of the user's value holding the
# same numbers in another layout, where its point is placed and reported.
USER_VALUE = "wn_onnx.user_value"


@dataclass(frozen=True)
class Point:
    """One place noise can be injected."""

    index: int
    tensor: str
    op_type: str  # producing op, "Input" for a graph input
    node: str  # producing node's name ("" for inputs)
    shape: tuple[int | str | None, ...] | None

    def to_json(self) -> dict:
        return {"index": self.index, "tensor": self.tensor, "op_type": self.op_type, "shape": _shape_json(self.shape)}


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


_RANGE = re.compile(r"^(-?\d+)?(?:-|:)(-?\d+)?$")


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
            raise WnError(f"--at {at!r}: invalid regular expression ({err})") from None
        chosen = [p for p in points if pattern.search(p.tensor) or pattern.search(p.node)]
    else:
        wanted: set[int] = set()
        for part in at.split(","):
            part = part.strip()
            if not part:
                continue
            m = _RANGE.match(part)
            try:
                if part.lstrip("-").isdigit():
                    wanted.add(int(part) % len(points) if int(part) < 0 else int(part))
                elif m:
                    lo = int(m.group(1)) if m.group(1) else 0
                    hi = int(m.group(2)) if m.group(2) else len(points) - 1
                    wanted.update(range(lo, min(hi, len(points)) + 1))  # past the end: reported below, not built
                else:
                    raise ValueError
            except (ValueError, ZeroDivisionError):
                raise WnError(f"--at {at!r}: use indices (0,3,5-8), op:TYPE[,TYPE] or re:PATTERN") from None
        bad = sorted(i for i in wanted if not 0 <= i < len(points))
        if bad:
            raise WnError(
                f"--at {at!r}: point index {bad[0]} out of range (model has {len(points)} points: 0-{len(points) - 1})"
            )
        chosen = [p for p in points if p.index in wanted]
    if not chosen:
        raise WnError(f"--at {at!r} selects no noise point (see `wn-onnx points MODEL`)")
    return chosen
