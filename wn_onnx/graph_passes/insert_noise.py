"""Pass: put one ``wn_onnx`` noise node after each chosen value.

Sigma enters as graph inputs ``wn_sigma_add`` / ``wn_sigma_mul`` of shape ``[P]`` (entry k for the
k-th noisy value, in the order given), so one session serves every point and every sigma. With
``source="fed"`` each point also gets standard-normal inputs ``wn_z_k`` (and ``wn_z2_k`` for mixed
noise); with ``source="drawn"`` the graph samples its own noise. Downstream consumers and graph
outputs then see the noisy value; a noisy graph output keeps its original name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from wn_onnx.graph_passes.noise_functions import DOMAIN, function_closure, noise_function, sigma_inputs
from wn_onnx.graph_passes.points import subgraphs
from wn_onnx.io.vocabulary import MIN_OPSET
from wn_onnx.noise import NoiseSpec

SIGMA_INPUT = {"sigma_add": "wn_sigma_add", "sigma_mul": "wn_sigma_mul"}


def z_input_names(k: int, spec: NoiseSpec) -> list[str]:
    """Names of the fed standard-normal inputs of the k-th noisy value."""
    return [f"wn_z_{k}"] + ([f"wn_z2_{k}"] if spec.draws == 2 else [])


def values_by_name(graph: ir.Graph, inner: bool = False) -> dict[str, ir.Value]:
    """Every named value of the graph: inputs, initializers and node outputs; ``inner``: the
    node outputs inside If branches too (the graph's own values win a name clash)."""
    table = {v.name: v for v in graph.inputs if v.name}
    table.update(graph.initializers)
    table.update((v.name, v) for node in graph for v in node.outputs if v.name)  # one pass: long graphs
    if inner:
        for node in graph:
            if node.op_type == "If":
                for _, body in subgraphs(node):
                    table = values_by_name(body, inner=True) | table
    return table


class _Builder:
    """Collects new nodes (named after their output) and constant initializers for a pass."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.nodes: list[ir.Node] = []

    def const(self, name: str, array: np.ndarray) -> ir.Value:
        if name in self.graph.initializers:
            return self.graph.initializers[name]
        v = ir.Value(name=name, const_value=ir.tensor(array))
        self.graph.register_initializer(v)
        return v

    def node(self, op: str, inputs: list[ir.Value], name: str, domain: str = "", **attrs: int) -> ir.Value:
        n = ir.Node(domain, op, inputs, {k: ir.AttrInt64(k, v) for k, v in attrs.items()}, name=name)
        n.outputs[0].name = name
        self.nodes.append(n)
        return n.outputs[0]

    def mean_over_first_axis(self, value: ir.Value, name: str, opset: int) -> ir.Value:
        """ReduceMean over axis 0 without keeping it (axes became an input at opset 18)."""
        if opset >= 18:
            return self.node("ReduceMean", [value, self.const("wn_axis0", np.array([0], np.int64))], name, keepdims=0)
        n = ir.Node(
            "",
            "ReduceMean",
            [value],
            {"axes": ir.AttrInt64s("axes", [0]), "keepdims": ir.AttrInt64("keepdims", 0)},
            name=name,
        )
        n.outputs[0].name = name
        self.nodes.append(n)
        return n.outputs[0]


class InsertNoisePass(ir.passes.InPlacePass):
    """Insert noise after ``tensors`` (names), in that order, with noise ``spec``.

    ``repetitions`` (one count per tensor) makes point k execute n_k times: n_k independent
    noise samples of the point's noise, averaged — what repeating a layer on noisy hardware and
    averaging gives. Fed noise inputs then carry a leading axis of length n_k.
    """

    def __init__(
        self, tensors: Sequence[str], spec: NoiseSpec, source: str = "fed", repetitions: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if source not in ("fed", "drawn"):
            raise ValueError(f"source must be 'fed' or 'drawn', got {source!r}")
        if repetitions is not None and (len(repetitions) != len(tensors) or min(repetitions, default=1) < 1):
            raise ValueError("repetitions needs one count >= 1 per tensor")
        self.tensors = list(tensors)
        self.spec = spec
        self.source = source
        self.repetitions = list(repetitions) if repetitions is not None else None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        version = model.opset_imports.get("", 0)
        if version < MIN_OPSET:
            raise ValueError(f"model opset {version} < {MIN_OPSET}: convert it with onnx.version_converter first")
        for fn in function_closure(self.spec, self.source, version):
            model.functions[fn.identifier()] = fn
        model.opset_imports[DOMAIN] = 1
        table = values_by_name(graph, inner=True)
        missing = [t for t in self.tensors if t not in table]
        if missing:
            raise ValueError(f"no value named {missing[0]!r} in the graph")

        count = len(self.tensors)
        sigmas = {}
        for comp in sigma_inputs(self.spec):
            sigmas[comp] = ir.Value(
                name=SIGMA_INPUT[comp], type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([count])
            )
            graph.inputs.append(sigmas[comp])
        op_type = noise_function(self.spec, self.source).name
        for k, name in enumerate(self.tensors):
            value = table[name]
            users = list(value.uses())
            b = _Builder(graph)
            index = b.const(f"wn_k_{k}", np.array(k, dtype=np.int64))
            repeat = self.repetitions[k] if self.repetitions is not None else None
            x = value
            if repeat is not None:  # stack n_k executions on a new leading axis
                x = b.node("Unsqueeze", [value, b.const("wn_axis0", np.array([0], np.int64))], f"wn_x_{k}_once")
                if self.source == "drawn":
                    times = b.node(
                        "Concat",
                        [b.const(f"wn_n_{k}", np.array([repeat], np.int64)), b.node("Shape", [value], f"wn_shape_{k}")],
                        f"wn_times_{k}",
                        axis=0,
                    )
                    x = b.node("Expand", [x, times], f"wn_x_{k}_times")
            args: list[ir.Value] = [x]
            inside = value.graph is not graph  # in an If branch: its shape may differ per branch taken
            if self.source == "fed":
                z_shape = None if inside else value.shape  # with repetitions: a leading axis, any count can be fed
                if repeat is not None and z_shape is not None:
                    z_shape = ir.Shape([f"wn_n_{k}", *z_shape])
                for z_name in z_input_names(k, self.spec):
                    z = ir.Value(name=z_name, type=value.type, shape=z_shape)
                    graph.inputs.append(z)
                    args.append(z)
            for comp, vector in sigmas.items():
                sigma = b.node("Gather", [vector, index], f"wn_{comp}_{k}")
                sigma.type, sigma.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape([])
                if value.dtype != ir.DataType.FLOAT:
                    sigma = b.node("CastLike", [sigma, value], f"wn_{comp}_{k}_cast")
                args.append(sigma)
            noisy = b.node(op_type, args, f"wn_noise_{k}", DOMAIN)
            if repeat is not None:
                noisy = b.mean_over_first_axis(noisy, f"wn_mean_{k}", version)
            noisy.type, noisy.shape = value.type, value.shape
            new_nodes = b.nodes
            if value.is_graph_output():
                noisy.name, value.name = name, f"{name}__clean"
                for i, out in enumerate(value.graph.outputs):
                    if out is value:
                        value.graph.outputs[i] = noisy
            else:
                noisy.name = f"{name}__noisy"
            for user, slot in users:
                user.replace_input_with(slot, noisy)
            if value.producer() is None:
                graph.insert_before(graph.node(0), new_nodes)
            else:
                value.graph.insert_after(value.producer(), new_nodes)
        model.metadata_props["wn_onnx.noise_points"] = json.dumps(self.tensors)
        model.metadata_props["wn_onnx.noise"] = json.dumps({**self.spec.to_json(), "source": self.source})
        if self.repetitions is not None:
            model.metadata_props["wn_onnx.repetitions"] = json.dumps(self.repetitions)
        return ir.passes.PassResult(model, modified=True)


class StackNoisyInputPass(ir.passes.InPlacePass):
    """Put noise on graph input ``name`` for C sigma values at once, stacked on its batch ``axis``.

    New inputs: ``wn_z`` (and ``wn_z2``) shaped like the input, and ``wn_sigma_add`` /
    ``wn_sigma_mul`` of shape ``[C]``. The rest of the graph sees a batch of C·B samples: the
    B inputs under sigma 0, then under sigma 1, … — one onnxruntime run per (repeat, chunk of
    sigmas) with common random numbers, the noise arithmetic done by the same ``wn_onnx``
    function as everywhere else. The input's rank must be known; with C = 1 any ``axis`` leaves
    the graph's arithmetic as it was.
    """

    def __init__(self, name: str, spec: NoiseSpec, axis: int = 0) -> None:
        super().__init__()
        self.name = name
        self.spec = spec
        self.axis = axis

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        value = next((v for v in graph.inputs if v.name == self.name), None)
        if value is None or value.shape is None:
            raise ValueError(f"{self.name!r} is not a graph input of known rank")
        rank, a = len(value.shape), self.axis
        for fn in function_closure(self.spec, "fed", model.opset_imports.get("", 0)):
            model.functions[fn.identifier()] = fn
        model.opset_imports[DOMAIN] = 1
        users = list(value.uses())
        b = _Builder(graph)
        at = b.const(f"wn_axis{a}", np.array([a], np.int64))
        args = [b.node("Unsqueeze", [value, at], "wn_x_stacked")]
        for z_name in ("wn_z", "wn_z2")[: self.spec.draws]:
            z = ir.Value(name=z_name, type=value.type, shape=value.shape)
            graph.inputs.append(z)
            args.append(b.node("Unsqueeze", [z, at], f"{z_name}_stacked"))
        column = b.const("wn_sigma_column", np.array([1] * a + [-1] + [1] * (rank - a), np.int64))
        for comp in sigma_inputs(self.spec):
            name = SIGMA_INPUT[comp]
            sigma = ir.Value(name=name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape(["C"]))
            graph.inputs.append(sigma)
            args.append(
                b.node("CastLike", [b.node("Reshape", [sigma, column], f"{name}_column"), value], f"{name}_cast")
            )
        noisy = b.node(noise_function(self.spec, "fed").name, args, "wn_noise_stacked", DOMAIN)
        parts = [b.const("wn_minus_one", np.array([-1], np.int64))]  # C and the batch merged, σ-major
        if a:
            parts.insert(0, b.node("Shape", [value], "wn_shape_before", start=0, end=a))
        if a + 1 < rank:
            parts.append(b.node("Shape", [value], "wn_shape_after", start=a + 1))
        target = b.node("Concat", parts, "wn_flat_shape", axis=0) if len(parts) > 1 else parts[0]
        flat = b.node("Reshape", [noisy, target], "wn_noisy_flat")
        dims = list(value.shape)
        flat.type, flat.shape = value.type, ir.Shape([*dims[:a], None, *dims[a + 1 :]])
        nodes = b.nodes
        for user, slot in users:
            user.replace_input_with(slot, flat)
        graph.insert_before(graph.node(0), nodes)
        return ir.passes.PassResult(model, modified=True)
