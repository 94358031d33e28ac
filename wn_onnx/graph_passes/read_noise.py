"""Read noise drawn per sample on a layer whose weights are read again for every input (``pcm``
with ``--read-noise per-sample``), as graph edits: each output gets Gaussian noise whose variance
is the layer applied to the squared input with the per-weight read variances as weights —
y + √(L_{var}(x²))·z, exactly the variance of (W + ΔW)·x for independent zero-mean ΔW per weight and
sample (Conv, ConvTranspose: the same attributes, no bias; Gemm: alpha², no C; MatMul). The
variances (``wn_read_var_k``) and the standard normals (``wn_read_z_k``) are runtime inputs."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from wn_onnx.errors import ConfigError
from wn_onnx.graph_passes.converters import layer_of, reroute


class ReadNoisePass(ir.passes.InPlacePass):
    """Per-sample read noise on the layer of each weight (by name), k in order. Each output
    element gets its own z: a fresh read of the array for every matrix-vector product."""

    def __init__(self, weights: Sequence[str]) -> None:
        super().__init__()
        self.weights = list(weights)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for k, (node, data_slot) in enumerate([layer_of(graph, w) for w in self.weights]):
            slot = 1 - data_slot
            x = node.inputs[data_slot]
            w = node.inputs[slot]
            if x.dtype != ir.DataType.FLOAT:
                raise ConfigError(f"layer {node.name or node.op_type!r}: per-sample read noise takes float32 values, not {x.dtype}")
            var_w = ir.Value(name=f"wn_read_var_{k}", type=w.type, shape=w.shape)
            z = ir.Value(name=f"wn_read_z_{k}", type=node.outputs[0].type, shape=node.outputs[0].shape)
            graph.inputs.extend([var_w, z])
            square = ir.Node("", "Mul", [x, x], name=f"wn_read_{k}_x2")
            args = [square.outputs[0], var_w] if slot == 1 else [var_w, square.outputs[0]]
            attrs = dict(node.attributes)
            if node.op_type == "Gemm":
                alpha = attrs.pop("alpha", None)
                attrs.pop("beta", None)
                if alpha is not None:
                    attrs["alpha"] = ir.AttrFloat32("alpha", alpha.as_float() ** 2)
            variance = ir.Node(node.domain, node.op_type, args, list(attrs.values()), name=f"wn_read_{k}_var")
            sd = ir.Node("", "Sqrt", [variance.outputs[0]], name=f"wn_read_{k}_sd")
            noise = ir.Node("", "Mul", [sd.outputs[0], z], name=f"wn_read_{k}_noise")
            y = node.outputs[0]
            users = list(y.uses())
            noisy = ir.Node("", "Add", [y, noise.outputs[0]], name=f"wn_read_{k}_noisy")
            added = [square, variance, sd, noise, noisy]
            for n in added:
                n.outputs[0].name = n.name
            reroute(graph, node, users, noisy.outputs[0], added, "read")
        return ir.passes.PassResult(model, modified=bool(self.weights))
