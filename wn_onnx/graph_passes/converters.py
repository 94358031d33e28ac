"""The converters of analog layers as graph edits: a quantiser on a layer's data input (DAC) and,
on its output, optional fed noise then a quantiser (ADC). Steps, levels and the noise scale are
runtime inputs (``wn_dac_step_k``, ``wn_adc_step_k``, ``wn_dac_levels``, ``wn_adc_levels``, the
one-bit flags ``wn_dac_sign``, ``wn_adc_sign``, ``wn_out_sd_k``, noise ``wn_out_z_k``), so one
session serves every bit width
(wn_onnx/noise/converters.py has the formulas)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from wn_onnx.errors import ConfigError


def _scalar(graph: ir.Graph, name: str) -> ir.Value:
    found = next((v for v in graph.inputs if v.name == name), None)
    if found is None:
        found = ir.Value(name=name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([]))
        graph.inputs.append(found)
    return found


def _quantiser(graph: ir.Graph, x: ir.Value, step: ir.Value, levels: ir.Value, sign: ir.Value,
               tag: str) -> tuple[list[ir.Node], ir.Value]:  # fmt: skip
    """Nodes computing clip(round(x/step), −levels, levels)·step, or sign(x)·step where the runtime
    flag ``sign`` is 1 (one bit: the sign alone)."""
    div = ir.Node("", "Div", [x, step], name=f"{tag}_div")
    rnd = ir.Node("", "Round", [div.outputs[0]], name=f"{tag}_round")
    neg = ir.Node("", "Neg", [levels], name=f"{tag}_neg")
    clip = ir.Node("", "Clip", [rnd.outputs[0], neg.outputs[0], levels], name=f"{tag}_clip")
    sgn = ir.Node("", "Sign", [x], name=f"{tag}_sign")
    diff = ir.Node("", "Sub", [sgn.outputs[0], clip.outputs[0]], name=f"{tag}_diff")
    pick = ir.Node("", "Mul", [diff.outputs[0], sign], name=f"{tag}_pick")
    code = ir.Node("", "Add", [clip.outputs[0], pick.outputs[0]], name=f"{tag}_code")
    mul = ir.Node("", "Mul", [code.outputs[0], step], name=f"{tag}_mul")
    nodes = [div, rnd, neg, clip, sgn, diff, pick, code, mul]
    for n in nodes:
        n.outputs[0].name = n.name
    mul.outputs[0].type, mul.outputs[0].shape = x.type, x.shape
    return nodes, mul.outputs[0]


def reroute(graph: ir.Graph, node: ir.Node, users: list, v: ir.Value, added: list[ir.Node], tag: str) -> None:
    """Every reader of ``node``'s output (``users``, taken before ``added`` read it) reads ``v``
    instead, ``added`` placed after ``node``; a graph output keeps its name on ``v``."""
    y = node.outputs[0]
    v.type, v.shape = y.type, y.shape
    if y.is_graph_output():
        v.name, y.name = y.name, f"{y.name}__{tag}"
        for i, out in enumerate(graph.outputs):
            if out is y:
                graph.outputs[i] = v
    for user, i in users:
        user.replace_input_with(i, v)
    graph.insert_after(node, added)


def layer_of(graph: ir.Graph, weight: str) -> tuple[ir.Node, int]:
    """(the node that multiplies by initializer or input ``weight``, the slot of its data input)."""
    value = graph.initializers.get(weight) or next((v for v in graph.inputs if v.name == weight), None)
    if value is None or not value.uses():
        raise ConfigError(f"no layer reads the weight {weight!r} in the graph")
    node, slot = value.uses()[0]
    return node, 1 - slot


class ConvertersPass(ir.passes.InPlacePass):
    """DAC before and ADC (with output noise) after the layer of each weight (by name), k in order.
    Every layer and its data slot are found before any edit, so a layer fed directly by another
    analog layer reads that layer's ADC output."""

    def __init__(self, weights: Sequence[str], dac: bool, adc: bool, noise: bool) -> None:
        super().__init__()
        self.weights, self.dac, self.adc, self.noise = list(weights), dac, adc, noise

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        layers = [layer_of(graph, w) for w in self.weights]
        for k, (node, slot) in enumerate(layers):
            y = node.outputs[0]
            if node.inputs[slot].dtype != ir.DataType.FLOAT or y.dtype != ir.DataType.FLOAT:
                raise ConfigError(f"layer {node.name or node.op_type!r}: converters take float32 values, not {y.dtype}")
            if self.dac:
                x = node.inputs[slot]
                added, q = _quantiser(graph, x, _scalar(graph, f"wn_dac_step_{k}"), _scalar(graph, "wn_dac_levels"),
                                      _scalar(graph, "wn_dac_sign"), f"wn_dac_{k}")  # fmt: skip
                graph.insert_before(node, added)
                node.replace_input_with(slot, q)
            if self.adc or self.noise:
                users = list(y.uses())
                added: list[ir.Node] = []
                v = y
                if self.noise:
                    z = ir.Value(name=f"wn_out_z_{k}", type=y.type, shape=y.shape)
                    graph.inputs.append(z)
                    scaled = ir.Node("", "Mul", [z, _scalar(graph, f"wn_out_sd_{k}")], name=f"wn_out_{k}_scaled")
                    noisy = ir.Node("", "Add", [v, scaled.outputs[0]], name=f"wn_out_{k}_noisy")
                    for n in (scaled, noisy):
                        n.outputs[0].name = n.name
                    added += [scaled, noisy]
                    v = noisy.outputs[0]
                if self.adc:
                    more, v = _quantiser(graph, v, _scalar(graph, f"wn_adc_step_{k}"), _scalar(graph, "wn_adc_levels"),
                                         _scalar(graph, "wn_adc_sign"), f"wn_adc_{k}")  # fmt: skip
                    added += more
                reroute(graph, node, users, v, added, "analog")
        return ir.passes.PassResult(model, modified=bool(self.weights))
