"""Passes that reshape what a graph computes without touching its arithmetic.

* :class:`ExposeValuesPass` adds intermediate values as graph outputs (taps on clean
  activations).
* :class:`ExtractSuffixPass` cuts the graph at given values: they become the inputs and only the
  nodes the outputs still need remain — the part after a noise point, fed its cached activation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from wn_onnx.graph_passes.insert_noise import values_by_name
from wn_onnx.graph_passes.points import subgraphs


def _lookup(graph: ir.Graph, names: Sequence[str]) -> list[ir.Value]:
    """The values ``names`` of ``graph``; one inside an If branch is brought out first (:func:`hoist`)."""
    table = values_by_name(graph)
    if all(n in table for n in names):  # the common case: no walk through the If branches
        return [table[n] for n in names]
    inner = values_by_name(graph, inner=True)
    missing = [n for n in names if n not in inner]
    if missing:
        raise ValueError(f"no value named {missing[0]!r} in the graph")
    for n in names:
        if n not in table:
            table[n] = hoist(graph, inner[n])
    return [table[n] for n in names]


def _holder(graph: ir.Graph, body: ir.Graph) -> ir.Node | None:
    """The node of ``graph`` (or of its bodies) that holds ``body``."""
    for node in graph:
        for _, sub in subgraphs(node):
            found = node if sub is body else _holder(sub, body)
            if found is not None:
                return found
    return None


def hoist(top: ir.Graph, value: ir.Value) -> ir.Value:
    """Make ``value``, computed inside an If branch, a value of the enclosing graph: an extra
    output of its branch and of the If node, the other branch giving an empty tensor. The If
    output takes the name (the inner value becomes ``NAME__inner``); when that branch is not
    taken, the value is empty. Nested branches are hoisted level by level."""
    graph = value.graph
    node = _holder(top, graph) if graph is not None and graph is not top else None
    if node is None or node.op_type != "If":
        return value
    name = value.name
    value.name = f"{name}__inner"
    for _, body in subgraphs(node):
        if body is graph:  # through an Identity: the value may be a branch output already
            copy = ir.Node("", "Identity", [value], name=f"{name}__hoisted")
            copy.outputs[0].name, copy.outputs[0].type = f"{name}__hoisted", value.type
            body.append(copy)
            body.outputs.append(copy.outputs[0])
        else:
            dtype = ir.DataType(value.dtype).numpy() if value.dtype is not None else np.float32
            empty = ir.Node("", "Constant", [], [ir.AttrTensor("value", ir.tensor(np.zeros((0,), dtype)))])
            empty.outputs[0].name = f"{name}__empty_{len(body.outputs)}"
            body.append(empty)
            body.outputs.append(empty.outputs[0])
    node.resize_outputs(len(node.outputs) + 1)
    outer = node.outputs[-1]
    outer.name, outer.type = name, value.type
    return hoist(top, outer)


class ExposeValuesPass(ir.passes.InPlacePass):
    """Make ``names`` graph outputs as well (after the existing outputs)."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        present = {v.name for v in graph.outputs}
        added = [v for v in _lookup(graph, self.names) if v.name not in present]
        graph.outputs.extend(added)
        return ir.passes.PassResult(model, modified=bool(added))


class ExtractSuffixPass(ir.passes.InPlacePass):
    """Keep the sub-graph computing ``outputs`` from ``inputs``; everything else goes."""

    def __init__(self, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        super().__init__()
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        new_inputs = []
        for value in _lookup(graph, self.inputs):
            if value.is_graph_input():
                new_inputs.append(value)
                continue
            cut = ir.Value(name=value.name, type=value.type, shape=value.shape)
            value.name = f"{value.name}__cut"
            value.replace_all_uses_with(cut, replace_graph_outputs=True)
            new_inputs.append(cut)
        graph.inputs.clear()
        graph.inputs.extend(new_inputs)
        outputs = _lookup(graph, self.outputs)
        graph.outputs.clear()
        graph.outputs.extend(outputs)
        RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=True)


def downstream(graph: ir.Graph, value: ir.Value) -> set[ir.Node]:
    """Nodes whose result depends on ``value``."""
    nodes: set[ir.Node] = set()
    frontier = [value]
    while frontier:
        for user, _ in frontier.pop().uses():
            if user not in nodes:
                nodes.add(user)
                frontier.extend(user.outputs)
    return nodes


def suffix_inputs(graph: ir.Graph, name: str, live: set[ir.Value]) -> list[str]:
    """Inputs the graph after value ``name`` needs: the value itself first, then any other
    data-dependent value (``live``) that a downstream node reads (skip connections…)."""
    (value,) = _lookup(graph, [name])
    nodes = downstream(graph, value)
    produced = {v for n in nodes for v in n.outputs}
    extra = []
    for node in graph:  # graph order keeps the list deterministic
        if node in nodes:
            for v in node.inputs:
                if v is not None and v is not value and v in live and v not in produced and v.name not in extra:
                    extra.append(v.name)
    return [name, *extra]


def has_subgraphs(graph: ir.Graph) -> bool:
    """Control flow hides outer-scope reads from the dataflow analysis above."""
    return any(
        attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for n in graph for attr in n.attributes.values()
    )


# Ops that are affine in their data input when every other input is a constant: noise entering
# them can be carried through exactly, A(x + σ·t) = A(x) + σ·L(t) with L the linear part.
AFFINE_SLOTS = {
    "Conv": (0,), "ConvTranspose": (0,), "Gemm": (0,), "MatMul": (0, 1), "BatchNormalization": (0,),
    "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Div": (0,), "Neg": (0,), "Identity": (0,),
    "Flatten": (0,), "Reshape": (0,), "Transpose": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
    "AveragePool": (0,), "GlobalAveragePool": (0,), "ReduceMean": (0,), "ReduceSum": (0,), "Dropout": (0,),
}  # fmt: skip


def affine_chain(graph: ir.Graph, name: str, live: set[ir.Value]) -> list[str]:
    """Values reached from ``name`` through single-consumer affine ops, in order (may be empty).

    Every other input of those ops must be a constant (not ``live``), each value on the way must
    have exactly one consumer and must not be a graph output, so noise at ``name`` reaches the
    rest of the graph only through the last value of the chain.
    """
    (value,) = _lookup(graph, [name])
    chain: list[str] = []
    while not value.is_graph_output() and len(value.uses()) == 1:
        node, slot = next(iter(value.uses()))
        slots = AFFINE_SLOTS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        others = [v for i, v in enumerate(node.inputs) if i != slot and v is not None]
        used_outputs = [o for o in node.outputs if o.uses() or o.is_graph_output()]
        if slots is None or slot not in slots or any(v in live for v in others) or len(used_outputs) != 1:
            break
        if (
            node.op_type == "BatchNormalization"
            and node.attributes.get("training_mode") is not None
            and node.attributes["training_mode"].as_int()
        ):
            break
        value = used_outputs[0]
        chain.append(value.name)
    return chain


def _offset_slots(node: ir.Node, data_slot: int) -> list[int]:
    """Inputs of an affine op that only shift its result (what L leaves out)."""
    if node.op_type in ("Add", "Sub"):
        return [1 - data_slot]
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        return [2]
    if node.op_type == "BatchNormalization":
        return [2, 3]  # bias and running mean
    return []


class LinearPartPass(ir.passes.InPlacePass):
    """Turn an extracted affine chain A (see :func:`affine_chain`) into its linear part L: every
    offset (bias, BatchNorm bias and mean, added constant) becomes zeros of its shape.

    L(t) is what the noise becomes; computing it as A(t) − A(0) would cancel it to nothing where
    the chain scales by less than float resolution next to its offsets (a BatchNorm gain of 1e-10
    beside a bias of 0.1, as training under noise σ = 1e10 leaves)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        live = {v for v in graph.inputs if not v.is_initializer()}
        modified = False
        for k, node in enumerate(list(graph)):
            slots = [i for i, v in enumerate(node.inputs) if v in live]
            if not slots:
                continue
            live.update(node.outputs)
            for slot in _offset_slots(node, slots[0]):
                offset = node.inputs[slot] if slot < len(node.inputs) else None
                if offset is None:
                    continue
                name = f"{node.name or node.op_type}_wn_zero_{k}_{slot}"  # unnamed nodes share op types: k keeps it unique
                shape = ir.Node("", "Shape", [offset], name=f"{name}_shape")
                zeros = ir.Node("", "ConstantOfShape", [shape.outputs[0]], name=f"{name}_float")
                cast = ir.Node("", "CastLike", [zeros.outputs[0], offset], name=name)
                for n, out in ((shape, f"{name}_shape"), (zeros, f"{name}_float"), (cast, name)):
                    n.outputs[0].name = out
                graph.insert_before(node, [shape, zeros, cast])
                node.replace_input_with(slot, cast.outputs[0])
                modified = True
        return ir.passes.PassResult(model, modified=modified)
