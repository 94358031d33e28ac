"""Weight points: the float initializers that Conv, ConvTranspose, Gemm and MatMul multiply an
activation by (what analog in-memory hardware stores as conductances), one point per layer, named
by the consuming node; and the pass that makes chosen weights runtime inputs so that a session
can be fed perturbed copies of them. Weights computed from constants (a Constant node, a
DequantizeLinear of int8 values, …) are made such initializers first (fold_weights.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import onnx_ir as ir

from wn_onnx.errors import ConfigError
from wn_onnx.graph_passes.points import Point, _shape, find_points, sample_dependent
from wn_onnx.io.vocabulary import FLOAT_TYPES

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class WeightPoint(Point):
    """A weight tensor one layer multiplies by: ``tensor`` is the initializer, ``node`` the layer."""

    data: str = ""  # the activation the layer multiplies by the weight (where a walk's suffix starts)
    channel_axis: int | None = None  # the weight's output-channel axis (per-channel statistics)
    output: str = ""  # the layer's output value (where an analog tile's ADC reads)
    shared: bool = False  # other nodes read the same weight (tied weights): a walk runs the whole graph


def _channel_axis(node: ir.Node, slot: int, rank: int) -> int | None:
    """The axis of the weight in input ``slot`` of ``node`` that indexes the layer's outputs."""
    attr = node.attributes
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":  # [C_in, C_out/group, …]: with groups no one axis holds the outputs
        group = attr.get("group")
        return 1 if rank > 1 and (group is None or group.as_int() == 1) else None
    if node.op_type == "Gemm":
        flag = attr.get("transB" if slot == 1 else "transA")
        flipped = bool(flag.as_int()) if flag is not None else False
        return (0 if flipped else 1) if slot == 1 else (1 if flipped else 0)
    if rank < 2:  # MatMul by a vector: one output
        return None
    return rank - 1 if slot == 1 else rank - 2


def _is_weight(value: ir.Value | None, live: set[ir.Value]) -> bool:
    return (
        value is not None
        and value.is_initializer()
        and value not in live
        and value.dtype in FLOAT_TYPES
        and value.const_value is not None
    )


def layer_operands(graph: ir.Graph, live: set[ir.Value]) -> Iterator[tuple[ir.Node, int, ir.Value]]:
    """(layer, slot, value) for each input of a Conv / ConvTranspose / Gemm / MatMul of ``graph``
    that holds no sample's values while the other operand does (``live``): where a layer's weight
    sits, in graph order (Gemm and MatMul: slot 1 first)."""
    for node in graph:
        if node.op_type not in WEIGHT_OPS or node.domain not in ("", "ai.onnx"):
            continue
        for slot in (1,) if node.op_type in ("Conv", "ConvTranspose") else (1, 0):
            other = node.inputs[1 - slot] if len(node.inputs) > 1 else None
            value = node.inputs[slot] if len(node.inputs) > slot else None
            if value is not None and value not in live and other is not None and other in live:
                yield node, slot, value


def find_weight_points(model: ir.Model) -> list[WeightPoint]:
    """Every float weight initializer a Conv / ConvTranspose / Gemm / MatMul of the main graph
    multiplies a data-dependent value by, in graph order (the layer's first such weight; a bias is
    not a weight point). A weight computed from constants is none until FoldWeightsPass
    (fold_weights.py) makes it an initializer, as a weight scan and ``find_points(on="weights")`` do."""
    graph = model.graph
    live = sample_dependent(graph)
    found: list[WeightPoint] = []
    seen: set[str] = set()
    for node, slot, weight in layer_operands(graph, live):
        if _is_weight(weight, live) and weight.name not in seen:
            seen.add(weight.name)
            rank = len(weight.shape) if weight.shape is not None else 0
            found.append(WeightPoint(len(found), weight.name, node.op_type, node.name or "", _shape(weight),
                                     data=node.inputs[1 - slot].name or "", channel_axis=_channel_axis(node, slot, rank),
                                     output=node.outputs[0].name or "", shared=len(weight.uses()) > 1))  # fmt: skip
    return found


def points_on(model: ir.Model, on: str, granularity: str, where: str) -> list[Point]:
    """The points a scan ``on`` activations (at ``granularity``) or weights walks in ``model``
    (``where``: the model's name for the error when it has no weights)."""
    if on == "weights":
        return require_weights(find_weight_points(model), where)
    return find_points(model, granularity)


def require_weights(points: list[WeightPoint], model: str) -> list[WeightPoint]:
    """``points``, or one clear error when the model has none."""
    if not points:
        raise ConfigError(
            f"{model}: no weight initializers: no Conv, ConvTranspose, Gemm or MatMul multiplies data by constant "
            "float weights (weights fed as graph inputs, or multiplied as integers by QLinearConv, ConvInteger or "
            "MatMulInteger, cannot be perturbed)"
        )
    return points


class WeightsAsInputsPass(ir.passes.InPlacePass):
    """Initializers ``names`` become graph inputs of the same name, type and shape (their values
    are fed at run time: a perturbed copy per evaluation)."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for name in self.names:
            value = graph.initializers.get(name)
            if value is None:
                raise ConfigError(f"weight {name!r} is not an initializer of the graph")
            if value.shape is None and value.const_value is not None:
                value.shape = ir.Shape(value.const_value.shape)
            del graph.initializers[name]
            value.const_value = None
            if value not in graph.inputs:
                graph.inputs.append(value)
        return ir.passes.PassResult(model, modified=bool(self.names))
