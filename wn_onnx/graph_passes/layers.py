"""Layer granularity: the ops of one compute layer or one activation / normalisation function
are one noise point, at the function's output.

Exporters write many functions as several ops: GELU as Div/Erf/Add/Mul/Mul (or nine ops in its
tanh form), LayerNorm before opset 17 as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add,
SiLU as Sigmoid/Mul, softmax as ReduceMax/Sub/Exp/ReduceSum/Div, a Linear on 3-D inputs as
MatMul/Add. Per-op points put noise between the ops of one function, where no hardware puts it.
The rule (docs/method.md, "Granularity"), found from the graph's structure, not from names:

1. **Function regions.** A value x read by several ops opens a region: the smallest set of ops
   on the paths from x to one value y that holds every op reading x inside the largest such set,
   where nothing but x (and constants) enters the set and nothing but y leaves it, and no
   compute layer (Conv, MatMul, Gemm, pooling, recurrent, control flow) lies inside.
   GELU, SiLU, hardswish and each half of a LayerNorm are such regions.
2. **Reductions join.** Adjacent regions and single ops that read only the previous one's output
   merge when one of them reduces (ReduceMean, ReduceSum, …) and neither is an elementwise-only
   region: the two halves of a LayerNorm, the three parts of a softmax, but never a GELU followed
   by a LayerNorm.
3. **Constant scale and shift.** An Add/Sub/Mul/Div of a layer's or function's output with a
   constant (a bias, LayerNorm's γ and β, GELU's final ·0.5) belongs to it, through layout ops.

Single ops stay single: a Conv, a Relu, a BatchNormalization, a LayerNormalization. The
paper's models (Gemm/Conv, BatchNorm, activation) have no region and no constant op after a
layer: both granularities give the same points there.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from wn_onnx.io.vocabulary import LAYOUT_OPS

# Ops that compute a layer (weights, windows, recurrences, control flow): never inside a function.
COMPUTE_OPS = frozenset(
    {
        "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger",
        "QLinearMatMul", "Einsum", "LSTM", "GRU", "RNN", "Attention", "MaxPool", "AveragePool",
        "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "Resize", "Upsample", "If",
        "Loop", "Scan", "TopK", "ArgMax", "ArgMin", "QuantizeLinear", "DequantizeLinear",
        "DynamicQuantizeLinear", "Gather", "GatherElements", "GatherND", "Concat", "Split",
    }
)  # fmt: skip
REDUCTIONS = frozenset(
    {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
     "ReduceSumSquare", "ReduceProd", "CumSum"}
)  # fmt: skip
SCALE_SHIFT = frozenset({"Add", "Sub", "Mul", "Div"})
REGION_LIMIT = 64  # ops explored after a value: a function is a handful of ops


@dataclass
class Group:
    """Ops reported as one point, at ``exit``."""

    nodes: list[ir.Node]
    exit: ir.Value
    region: bool  # a function region (rule 1), not a single op

    @property
    def reduces(self) -> bool:
        return any(n.op_type in REDUCTIONS for n in self.nodes)


def _plain(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _in_function(node: ir.Node) -> bool:
    return _plain(node) and node.op_type not in COMPUTE_OPS


def _live_inputs(node: ir.Node, live: set[ir.Value]) -> list[ir.Value]:
    return [v for v in node.inputs if v is not None and v in live]


class _Finder:
    def __init__(self, graph: ir.Graph, live: set[ir.Value]) -> None:
        self.live = live
        self.order = {n: i for i, n in enumerate(graph)}

    def _reach(self, x: ir.Value) -> list[ir.Node]:
        """Function ops reachable from ``x`` through function ops, in graph order (bounded)."""
        seen: set[ir.Node] = set()
        frontier = [n for n, _ in x.uses()]
        while frontier and len(seen) < REGION_LIMIT:
            node = frontier.pop()
            if node in seen or not _in_function(node) or node not in self.order:
                continue
            seen.add(node)
            frontier.extend(u for v in node.outputs for u, _ in v.uses())
        return sorted(seen, key=self.order.__getitem__)

    def _between(self, x: ir.Value, exit_node: ir.Node, reach: set[ir.Node]) -> set[ir.Node] | None:
        """The ops of ``reach`` on paths from x to ``exit_node``; None when something other than x
        enters them or something other than the exit's value leaves them."""
        region: set[ir.Node] = set()
        frontier = [exit_node]
        while frontier:
            node = frontier.pop()
            if node in region:
                continue
            region.add(node)
            for v in _live_inputs(node, self.live):
                if v is x:
                    continue
                producer = v.producer()
                if producer not in reach:
                    return None
                frontier.append(producer)
        (y,) = exit_node.outputs
        for node in region:
            for v in node.outputs:
                if v is not y and (v.is_graph_output() or any(u not in region for u, _ in v.uses())):
                    return None
        return region

    def region(self, x: ir.Value) -> Group | None:
        """The function region opened by ``x`` (rule 1), if any."""
        readers = {n for n, _ in x.uses()}
        if len(readers) < 2:
            return None
        reach = self._reach(x)
        members = set(reach)
        closed = [
            (node, r)
            for node in reach
            if len(node.outputs) == 1 and node.outputs[0] in self.live
            and (r := self._between(x, node, members)) is not None
        ]  # fmt: skip
        if not closed:
            return None
        inside = readers & closed[-1][1]  # the largest closed region: the readers of x it holds
        for node, r in closed:
            if len(inside) >= 2 and inside <= r:
                return Group(sorted(r, key=self.order.__getitem__), node.outputs[0], True)
        return None


def layer_groups(graph: ir.Graph, live: set[ir.Value]) -> dict[ir.Node, Group]:
    """Each op that is part of a multi-op layer or function → its group (ops left out stay single)."""
    finder = _Finder(graph, live)
    owner: dict[ir.Node, Group] = {}
    candidates = [v for v in graph.inputs if v in live] + [v for n in graph for v in n.outputs if v in live]
    for x in candidates:  # rule 1, in graph order; a region's inner values open none
        producer = x.producer()
        if producer in owner and owner[producer].exit is not x:
            continue
        group = finder.region(x)
        if group is not None and not any(n in owner for n in group.nodes):
            owner.update(dict.fromkeys(group.nodes, group))

    def single(node: ir.Node) -> Group:
        return owner.get(node) or Group([node], node.outputs[0], False)

    def next_of(group: Group) -> Group | None:
        """The group that alone reads ``group``'s output (None when several read it)."""
        y = group.exit
        users = {u for u, _ in y.uses()}
        if y.is_graph_output() or not users:
            return None
        groups_after = {id(single(u)): single(u) for u in users}
        if len(groups_after) != 1:
            return None
        (after,) = groups_after.values()
        entries = {v for n in after.nodes for v in _live_inputs(n, live) if v.producer() not in after.nodes}
        return after if entries == {y} else None

    def fragment(group: Group) -> bool:  # rule 2's pieces: a region, or one function op on one value
        node = group.nodes[0]
        return group.region or (
            len(group.nodes) == 1 and _in_function(node) and node.op_type not in NAMED_FUNCTIONS
            and len(_live_inputs(node, live)) == 1 and len(node.outputs) == 1
        )  # fmt: skip

    def merge(first: Group, second: Group) -> Group:
        nodes = sorted(first.nodes + second.nodes, key=finder.order.__getitem__)
        group = Group(nodes, second.exit, first.region or second.region)
        for n in group.nodes:
            owner[n] = group
        return group

    def joins(first: Group, second: Group) -> bool:  # rule 2
        pair = (first, second)
        regions = [g for g in pair if g.region]
        if not all(map(fragment, pair)) or not regions or not all(g.reduces for g in regions):
            return False  # an elementwise function (GELU, SiLU) is complete
        return not any(g.reduces for g in pair if not g.region)  # a reduction alone is a layer (pooling)

    def scale_shift(group: Group) -> Group | None:  # rule 3: the op and the layout ops before it
        y, path = group.exit, []
        while len(y.uses()) == 1 and not y.is_graph_output():
            ((user, _),) = y.uses()
            if not _plain(user) or user in owner or len(_live_inputs(user, live)) != 1 or len(user.outputs) != 1:
                return None
            path.append(user)
            if user.op_type in SCALE_SHIFT:
                return Group(path, user.outputs[0], False)
            if user.op_type not in LAYOUT_OPS:
                return None
            y = user.outputs[0]
        return None

    for node in graph:
        if not _live_inputs(node, live) or len(node.outputs) != 1:
            continue
        group = single(node)
        if group.exit is not node.outputs[0] or (node.op_type in LAYOUT_OPS and not group.region):
            continue  # a region's inner op, or a layout op (no point of its own)
        while (after := next_of(group)) is not None and joins(group, after):
            group = merge(group, after)
        while (after := scale_shift(group)) is not None:
            group = merge(group, after)
    return {n: g for n, g in owner.items() if len(g.nodes) > 1}


# Single ops that are a whole activation or normalisation function.
NAMED_FUNCTIONS = frozenset(
    {
        "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid",
        "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Softmax",
        "LogSoftmax", "Hardmax", "LayerNormalization", "BatchNormalization", "InstanceNormalization",
        "GroupNormalization", "LpNormalization", "MeanVarianceNormalization", "Clip", "Swish",
    }
)  # fmt: skip


def label(nodes: list[ir.Node]) -> str:
    """A name for a group's function, from its ops (the point's ``op_type``)."""
    ops = [n.op_type for n in nodes]
    kinds = set(ops)
    compute = [o for o in ops if o in COMPUTE_OPS]
    if compute:
        return compute[0]
    if "Erf" in kinds or ("Tanh" in kinds and ops.count("Mul") >= 3):
        return "Gelu"
    if "ReduceMean" in kinds and kinds & {"Sqrt", "Reciprocal"}:
        return "LayerNorm" if "Sub" in kinds else "RMSNorm"
    if {"Exp", "ReduceSum", "Div"} <= kinds:
        return "Softmax"
    if kinds & {"HardSigmoid", "Clip"} and "Mul" in kinds:
        return "HardSwish"
    if "Sigmoid" in kinds and "Mul" in kinds:
        return "SiLU"
    return next((o for o in ops if o not in LAYOUT_OPS), ops[0])
