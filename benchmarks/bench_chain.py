"""Fixed cost of a walking point on a long, thin graph: a chain of ``--nodes`` Add/Mul/Relu nodes
on a [N, 10] tensor (built with onnx.helper), scanned at one point with one σ and one repeat, so
the time is graph handling and engine setup rather than arithmetic (docs/design.md, "Long graphs")::

    python benchmarks/bench_chain.py --nodes 5000              # seconds for load, setup and one point
    python benchmarks/bench_chain.py --nodes 5000 --points 4   # minus the above, / 3: seconds per point
    python benchmarks/bench_chain.py --nodes 5000 --profile    # and the top of cProfile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def chain_model(nodes: int) -> onnx.ModelProto:
    """x → (Add c, Mul c, Relu)* → logits, every constant a small initializer."""
    cur, made, inits = "x", [], [numpy_helper.from_array(np.full(10, 0.01, np.float32), "c")]
    for i in range(nodes):
        op = ("Add", "Mul", "Relu")[i % 3]
        inputs = [cur] if op == "Relu" else [cur, "c" if op == "Add" else "one"]
        out = "logits" if i == nodes - 1 else f"t{i}"
        made.append(helper.make_node(op, inputs, [out], name=f"n{i}"))
        cur = out
    inits.append(numpy_helper.from_array(np.ones(10, np.float32), "one"))
    graph = helper.make_graph(made, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument(
        "--points", type=int, default=1, help="adjacent points walked (the cost per point is the difference)"
    )
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    from wn_onnx.cli.app import app

    with tempfile.TemporaryDirectory() as tmp:
        model, data = Path(tmp) / "chain.onnx", Path(tmp) / "data.npz"
        onnx.save(chain_model(a.nodes), model)
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.normal(size=(a.samples, 10)).astype(np.float32), y=rng.integers(0, 10, a.samples))
        args = [str(model), "--data", str(data), "--mode", "walking", "--at", f"{a.nodes // 6}-{a.nodes // 6 + a.points - 1}", "--sigmas", "0.1",
                "--repeats", "1", "--out", str(Path(tmp) / "r.json")]  # fmt: skip
        prof = cProfile.Profile() if a.profile else None
        start, cpu = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        try:
            app(["scan", *args], standalone_mode=False)
        finally:
            if prof:
                prof.disable()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"{a.nodes} nodes, {a.points} points (load + setup + scan): {wall:.2f} s wall, {cpu:.2f} s CPU")
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()
