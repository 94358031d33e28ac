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


class ReadNoisePass(ir.passes.InPlacePass):
    """Per-sample read noise on each layer ``(output name, weight name)``, k in order."""

    def __init__(self, layers: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.layers = list(layers)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        producers = {v.name: n for n in graph for v in n.outputs if v.name}
        for k, (output, weight) in enumerate(self.layers):
            node = producers.get(output)
            if node is None:
                raise ConfigError(f"no layer computes {output!r} in the graph")
            slot = next(i for i, v in enumerate(node.inputs[:2]) if v is not None and v.name == weight)
            x = node.inputs[1 - slot]
            w = node.inputs[slot]
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
            v = noisy.outputs[0]
            v.type, v.shape = y.type, y.shape
            if y.is_graph_output():
                v.name, y.name = y.name, f"{y.name}__read"
                for i, out in enumerate(graph.outputs):
                    if out is y:
                        graph.outputs[i] = v
            for user, i in users:
                user.replace_input_with(i, v)
            graph.insert_after(node, added)
        return ir.passes.PassResult(model, modified=bool(self.layers))
