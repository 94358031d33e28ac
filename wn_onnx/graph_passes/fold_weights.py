"""Weights held as constant expressions, folded into float initializers so that a weight scan finds
and perturbs them as it does weights stored plainly.

Exporters and quantisers often hand a layer its weight through a few nodes: a ``Constant`` node
(Paddle, TorchScript's traced tensors), a ``Transpose`` of an initializer (TorchScript without
constant folding), a ``DequantizeLinear`` of int8 values (onnxruntime's QDQ quantisation), with
``Identity``, ``Cast`` and shape ops on constant shapes between. The values are fixed all the
same: what the layer multiplies by is the weight an analog array would store.

Only the weights of layers are folded (a bias, a DequantizeLinear that feeds anything else keeps its
form), into initializers named as the value the layer reads, computed by onnxruntime as the model
would compute them. A quantised weight becomes its float values (the dequantised weight): four
bytes a weight, for the layers alone.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import onnx_ir as ir
import onnxruntime as ort

from wn_onnx.errors import ModelError
from wn_onnx.graph_passes.points import sample_dependent
from wn_onnx.graph_passes.weights import layer_operands
from wn_onnx.io.vocabulary import FLOAT_TYPES

if TYPE_CHECKING:
    from wn_onnx.io.model import LoadedModel

# ops whose result is fixed by constant inputs and holds the same numbers in another layout or type
FOLDED_OPS = frozenset(
    {"Constant", "Identity", "Cast", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "DequantizeLinear"}
)


def _from_constants(value: ir.Value) -> bool:
    """Whether ``value`` is computed from initializers and Constant nodes through FOLDED_OPS alone
    (a Reshape's shape included: a shape computed from the data is not constant)."""
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if v.is_initializer() and v.const_value is not None:
            continue
        node = v.producer()
        if node is None or node.op_type not in FOLDED_OPS or node.domain not in ("", "ai.onnx"):
            return False
        stack.extend(i for i in node.inputs if i is not None)
    return True


def constant_weights(model: ir.Model) -> list[ir.Value]:
    """The weights of ``model``'s layers (graph_passes/weights.py) that are computed from constants
    rather than stored as initializers, in graph order."""
    graph = model.graph
    live = sample_dependent(graph)
    found = (
        value
        for _node, _slot, value in layer_operands(graph, live)
        if not value.is_initializer()
        and not value.is_graph_output()
        and (value.dtype is None or value.dtype in FLOAT_TYPES)
        and _from_constants(value)
    )
    return list(dict.fromkeys(found))


class FoldWeightsPass(ir.passes.InPlacePass):
    """Each weight :func:`constant_weights` finds becomes a float initializer of the same name; the
    nodes and initializers it was computed from go where nothing else reads them."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        weights = constant_weights(model)
        values = {w: ir.convenience.get_const_tensor(w) for w in weights}  # a Constant node's tensor as it is
        computed = [w for w, t in values.items() if t is None]
        if computed:
            values |= dict(zip(computed, _compute(model, computed), strict=True))
        modified = False
        for value, tensor in values.items():
            if tensor.dtype not in FLOAT_TYPES:
                continue
            name, value.name = value.name, None  # the name passes to the initializer; the value goes with its node
            weight = ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype),
                              const_value=tensor)  # fmt: skip
            ir.convenience.replace_all_uses_with(value, weight)
            graph.register_initializer(weight)
            _drop_unread(graph, value)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _drop_unread(graph: ir.Graph, value: ir.Value) -> None:
    """``value``'s node and what only it read (a folded weight's chain, its quantised tensors) out
    of ``graph``; the rest of the graph stays as written, dead nodes of the model's own included."""
    stack = [value]
    while stack:
        v = stack.pop()
        if v.uses() or v.is_graph_output() or v.is_graph_input():
            continue
        if v.is_initializer():
            graph.initializers.pop(v.name)
            continue
        node = v.producer()
        if node is None or node.graph is not graph or any(o.uses() or o.is_graph_output() for o in node.outputs):
            continue
        inputs = [i for i in node.inputs if i is not None]
        graph.remove(node, safe=True)
        stack.extend(inputs)


def _compute(model: ir.Model, values: list[ir.Value]) -> list[ir.Tensor]:
    """``values`` as onnxruntime computes them: the nodes they are computed from, copied out into a
    graph of their own (tensors shared) and run once. (onnxscript's constant folder evaluates with
    ONNX's reference ops, which have no DequantizeLinear before opset 19, the opset of many QDQ
    models.)"""
    chains = ir.Model(ir.convenience.extract(model.graph, inputs=[], outputs=values), ir_version=model.ir_version)
    chains.graph.opset_imports.update(model.graph.opset_imports)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the nodes as written
    options.log_severity_level = 3
    try:
        proto = ir.to_proto(chains).SerializeToString()
        arrays = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"]).run(None, {})
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(f"the weights computed from constants cannot be computed: {first[:200]}") from None
    return [ir.Tensor(a) for a in arrays]


def weights_folded(loaded: LoadedModel) -> LoadedModel:
    """``loaded`` for a weight scan: its constant weights folded (:class:`FoldWeightsPass`) in a
    copy that shares the tensors, the graph as written kept for activation scans; ``loaded``
    itself when it has none."""
    if loaded.weights_folded or not constant_weights(loaded.model):
        return loaded
    model = loaded.model.clone()
    FoldWeightsPass()(model)
    return dataclasses.replace(loaded, model=model, weights_folded=True)
