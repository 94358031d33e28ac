"""Honest numbers on every output and every model (issue 28): each test builds a small model or
curve whose right answer is known, and fails when wn-onnx reports a number the data do not support."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import wn
from onnx import TensorProto, helper, numpy_helper

GRID = ["--sigmas", "log:1e-2:1e2:9", "--repeats", "2"]
FAST = [*GRID, "--quiet"]


def save(path: Path, nodes: list, inits: dict[str, np.ndarray], inputs=(("x", ["N", 4]),), out=("y", ["N", 3])) -> Path:
    """A float graph of ``nodes`` with initializers ``inits`` (opset 17)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def linear(path: Path, w: np.ndarray, b: np.ndarray, after: list | None = None) -> Path:
    """x (N, 4) → x·w + b → ``after`` (nodes from 'z' to 'y'; none: 'z' is 'y')."""
    last = "z" if after else "y"
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], [last]), *(after or [])]
    return save(path, nodes, {"w": w.astype(np.float32), "b": b.astype(np.float32)})


RNG = np.random.default_rng(0)
X = RNG.standard_normal((60, 4)).astype(np.float32)
W = RNG.standard_normal((4, 3)).astype(np.float32)


def samples(path: Path, y: np.ndarray | None = None) -> Path:
    np.savez(path, x=X, y=np.argmax(X @ W, axis=1) if y is None else y)
    return path


# ---------------------------------------------------------------- item 3: degenerate models
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: linear(p, W * np.nan, np.zeros(3)), "NaN/Inf for every one of the 60 samples without noise"),
        (lambda p: linear(p, W * 0, np.array([0, 0, 1.0])), "the clean score 0 is not above a_min 0.333"),
    ],
    ids=["nan", "constant"],
)
def test_degenerate_models_are_refused_by_scan_and_check(tmp_path, build, message):
    """A model that is NaN for every sample, or constant at 0 % (a class no sample has), has no
    robustness to measure: scan and check refuse it in one line with exit 2, never a `not-reached`
    μ at the grid's end that passes a floor."""
    model, data = build(tmp_path / "m.onnx"), samples(tmp_path / "d.npz", y=np.arange(60) % 2)
    for command in (["scan", model, "--data", data, *FAST], ["check", model, "--data", data, "--min-mu", "0.5", *GRID]):
        res = wn(*command)
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_partly_nonfinite_clean_outputs_are_counted(tmp_path):
    """NaN for the samples with x₀ < 0 (√x₀·0 added): the scan runs and says how many samples are NaN."""
    after = [helper.make_node("Slice", ["x", "s0", "s1", "ax"], ["x0"]), helper.make_node("Sqrt", ["x0"], ["r"]),
             helper.make_node("Mul", ["r", "zero"], ["nan"]), helper.make_node("Add", ["z", "nan"], ["y"])]  # fmt: skip
    model = linear(tmp_path / "m.onnx", W, np.zeros(3), after)
    m = onnx.load(str(model))
    for name, value in (("s0", [0]), ("s1", [1]), ("ax", [1])):
        m.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    m.graph.initializer.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
    onnx.save(m, str(model))
    res = wn("scan", model, "--data", samples(tmp_path / "d.npz"), *FAST, "--out", tmp_path / "r.json")
    bad = int(np.sum(X[:, 0] < 0))
    assert res.returncode == 0, res.stderr
    assert f"{bad} of 60 samples have NaN/Inf outputs without noise" in res.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["clean_nonfinite"] == bad and report["clean_accuracy"] == pytest.approx(1 - bad / 60)


# ---------------------------------------------------------------- item 1: fractional scores
SIGMAS = np.geomspace(0.05, 20, 13)


def per_element_curve(rng: np.random.Generator, mu: float, n: int = 20, elements: int = 1000, repeats: int = 2):
    """Scores that are each the mean of ``elements`` Bernoulli values, measured the way a scan
    measures them: every element has a breaking σ per repeat (log-normal about log μ: a sample
    part, an element part, a draw part; common random numbers across σ) and after it is right
    with probability 1/2 (chance). The mean score is 1/2 + 1/2·P(σ < breaking σ), which passes its
    midpoint 3/4 exactly at μ. Returns (accuracy σ × repeats, mean squared score σ × repeats)."""
    sample = rng.normal(0, 0.4, (n, 1, 1))
    element = rng.normal(0, 0.3, (n, elements, 1))
    breaking = np.log(mu) + sample + element + rng.normal(0, 0.3, (n, elements, repeats))
    coin = rng.random((n, elements, repeats)) < 0.5
    scores = np.stack([((np.log(s) < breaking) | coin).mean(axis=1) for s in SIGMAS])  # σ × sample × repeat
    return scores.mean(axis=1), (scores**2).mean(axis=1)


def test_fractional_scores_get_their_own_variance():
    """Each sample's score is the mean of 1,000 Bernoulli values: the fit's Δy comes from the
    scores' own spread, not p(1 − p)/n as if each sample were 0/1, so μ is resolved (`ok`) and its
    ±1 s.d. interval covers the known μ about 68 % of the time."""
    from wn_onnx.results.fit import fit_curve, score_variance

    rng, mu, hits, statuses = np.random.default_rng(1), 1.3, 0, []
    for _ in range(40):
        acc, squares = per_element_curve(rng, mu)
        variance = score_variance(acc, squares)
        assert variance is not None and np.all(variance <= 0.5 * acc.mean(axis=1) * (1 - acc.mean(axis=1)))
        fit = fit_curve(SIGMAS, acc, 0.5, 20, clean=1.0, variance=variance, clean_variance=0.0)
        statuses.append(fit.status)
        hits += fit.status == "ok" and abs(fit.mu - mu) <= fit.mu_err
    assert statuses.count("ok") >= 38, statuses
    assert 0.5 <= hits / 40 <= 0.88, hits


def test_zero_one_scores_keep_the_binomial():
    """0/1 scores are recognised as such (their variance is p(1 − p) exactly)."""
    from wn_onnx.results.fit import score_variance

    acc = np.array([[0.9, 0.8], [0.5, 0.45]])
    assert score_variance(acc, acc) is None


def test_a_per_element_scan_resolves_its_drop(tmp_path):
    """Samples of 1,000 elements, a sigmoid, label-free binary per element: under additive noise
    at the input an element keeps its side with probability ½ + arctan(|x|/σ)/π averaged over
    x ~ N(0, 1), i.e. ½ + arctan(1/σ)/π, which is half-way between 1 and ½ at σ = 1. The grid
    finds μ ≈ 1 (`ok`) on 6 samples instead of `not-reached` from a 0/1 error model."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["y"])]
    model = save(tmp_path / "m.onnx", nodes, {}, inputs=(("x", ["N", 1000]),), out=("y", ["N", 1000]))
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).standard_normal((6, 1000)).astype(np.float32))
    res = wn("scan", model, "--data", tmp_path / "d.npz", "--label-free", "--metric", "binary", "--mode", "walking",
             "--at", "0", "--sigmas", "log:1e-2:1e2:13", "--repeats", "2", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    point = json.loads(res.stdout)["points"][0]
    assert point["status"] == "ok" and abs(point["mu"] - 1.0) < 3 * point["mu_err"], point


def test_a_per_element_scan_is_honest_with_the_sequential_estimator(tmp_path):
    """The same curve on 100 samples, sequential, 6 seeds. Its scores are so precise (1,000
    elements each) that none of the four shapes matches the arctan curve within their error, so
    the estimate often ends `poor-fit` (4 of these 6 seeds; the trials weigh as their scores' own
    spread says). What must hold: an `ok` μ is within 3 errors of 1 and converged, and a `poor-fit`
    bracket — what `check` judges — holds the true μ (the bare posterior's 95 % interval held it
    at none of the four: [1.15, 1.18] at seed 0)."""
    import wn_onnx

    nodes = [helper.make_node("Sigmoid", ["x"], ["y"])]
    model = save(tmp_path / "m.onnx", nodes, {}, inputs=(("x", ["N", 1000]),), out=("y", ["N", 1000]))
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).standard_normal((100, 1000)).astype(np.float32))
    statuses = []
    for seed in range(6):
        point = wn_onnx.scan(str(model), str(tmp_path / "d.npz"), label_free=True, metric="binary", mode="walking",
                             at="0", levels="log:1e-2:1e2:13", repeats=2, estimator="sequential", seed=seed).points[0]  # fmt: skip
        statuses.append(point.status)
        if point.status == "ok":
            assert abs(point.mu - 1.0) < 3 * point.mu_err and point.sequential.converged, (seed, point.mu, point.mu_err)
        else:
            assert point.status == "poor-fit" and point.fit.bracket[0] <= 1.0 <= point.fit.bracket[1], (seed, point.fit)
    assert "ok" in statuses, statuses


# ---------------------------------------------------------------- item 2: one σ's repeats
def test_a_resolved_drop_with_differing_repeats_is_ok():
    """A 2-class classifier, 200 samples, 2 repeats, an adaptive add grid: four values inside the
    drop and the crossing between 0.562 and 1. At σ = 1 the repeats scored 0.64 and 0.53; their
    spread (one degree of freedom) made that value's Δy 0.055, above the binomial 0.035 that bounds
    noise draws on one network, so it was no longer significantly above chance and the fit found
    the drop on one side of μ only (`bracketed`, μ 0.64 ± 0.36). μ is `ok` and agrees with the
    crossing; the same curve from separately trained networks (shared_draws False) keeps its spread."""
    from wn_onnx.results.fit import fit_curve

    sigmas = [0.01, 0.0562, 0.1, 0.178, 0.316, 0.562, 1.0, 1.78, 3.16, 10, 316, 1e4, 3.16e5, 1e7, 3.16e8, 1e10]
    mean = [0.985, 0.98, 0.97, 0.945, 0.8875, 0.785, 0.585] + [0.5] * 9
    acc = np.array([[m, m] for m in mean])
    acc[6] = [0.64, 0.53]
    fit = fit_curve(sigmas, acc, 0.5, 200, clean=0.985)
    assert fit.status == "ok" and 0.562 < fit.mu < 1.0, fit
    assert abs(fit.mu - fit.mu_threshold) < 2 * fit.mu_err < 0.2, fit
    assert fit_curve(sigmas, acc, 0.5, 200, clean=0.985, shared_draws=False).status == "bracketed"


# ---------------------------------------------------------------- item 9: fell() against chance
def test_a_flat_curve_did_not_fall():
    """A narrow grid where the curve stayed at 0.970–0.973 (a_min estimated as that plateau, chance
    0.1): the wiggle is no fall, so plan counts the point as robust; a fall of 10 % of
    a_max − chance still counts."""
    from wn_onnx.planner import PlanInput
    from wn_onnx.results.fit import fell

    flat = {"index": 0, "tensor": "t0", "status": "not-reached", "mu": 0.1, "mu_err": None, "a_max": 0.973,
            "a_min": 0.9703, "accuracy": [[0.973, 0.972], [0.971, 0.970], [0.970, 0.971]], "fit": {}}  # fmt: skip
    fallen = {**flat, "index": 1, "tensor": "t1", "accuracy": [[0.973, 0.972], [0.88, 0.89]]}
    inp = PlanInput.from_report({"chance": 0.1, "points": [flat, fallen]})
    assert inp.robust.tolist() == [True, False]
    assert not fell(flat, 0.1) and fell(fallen, 0.1)


# ---------------------------------------------------------------- item 10: baselines
def test_a_baseline_from_another_model_is_refused():
    """One shared tensor name (``logits``) is no evidence of the same model: a baseline needs the
    same model digest or every point; the same model scanned at fewer points names each point it
    cannot compare, as a failing verdict."""
    from wn_onnx.errors import WnError
    from wn_onnx.gate import Policy, evaluate_policy

    def curve(i: int, tensor: str) -> dict:
        return {"index": i, "tensor": tensor, "op_type": "Gemm", "status": "ok", "mu": 1.0, "mu_err": 0.01, "fit": {}}

    def rep(digest: str, *tensors: str) -> dict:
        return {"model_digest": digest, "points": [curve(i, t) for i, t in enumerate(tensors)], "global": None}

    policy = Policy(max_drop=0.2)
    with pytest.raises(WnError, match=r"another model: 2 of 3 points are not in it \(conv1, conv2\)"):
        evaluate_policy(rep("aaa", "conv1", "conv2", "logits"), policy, rep("bbb", "fc", "logits"))
    assert all(v.passed for v in evaluate_policy(rep("aaa", "conv1", "logits"), policy, rep("bbb", "conv1", "logits")))
    verdicts = evaluate_policy(rep("aaa", "conv1", "logits"), policy, rep("aaa", "logits"))
    assert [v.passed for v in verdicts] == [False, True] and "conv1" in verdicts[0].message
    assert "not in the baseline" in verdicts[0].message


# ---------------------------------------------------------------- item 5: untaken If branches
def test_points_in_an_untaken_branch_are_not_run(tmp_path):
    """The else-branch of an If that the data never take: its point is never computed, so noise
    there changes nothing — not the most robust layer of the model. It is listed apart as
    `not-run`, walked nowhere, and left out of the global sweep, `plan` and `check`."""
    import onnxruntime as ort
    from test_granularity import if_model

    model = if_model(tmp_path / "if.onnx")
    x = np.random.default_rng(2).standard_normal((40, 8)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(axis=1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = wn("scan", model, "--data", tmp_path / "d.npz", *GRID, "--out", tmp_path / "r.json", columns=200)
    assert res.returncode == 0, res.stderr
    assert "not-run: 1 point in If branches these data never take (If_0/else_branch): 1;" in res.stdout, res.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert [(p["tensor"], p["status"]) for p in report["not_run"]] == [("e_o", "not-run")]
    assert "e_o" not in [p["tensor"] for p in report["points"]] and 1 not in report["global"]["points"]
    assert {p["tensor"] for p in report["points"]} == {"x", "t_h", "t_r", "t_o", "y"}
    res = wn("plan", tmp_path / "r.json", "--budget", "12", "--json")
    assert res.returncode == 0 and "e_o" not in res.stdout, res


# ---------------------------------------------------------------- item 8: values with no sample's data
def test_dynamic_quantization_scales_are_not_points(tmp_path):
    """onnxruntime's dynamic quantization multiplies the batch's scale (one number per batch) by
    the weights' per-channel scales: a [24] tensor computed anew for every batch but holding no
    sample's values. It is no point; the activations around it are."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["y"])]  # fmt: skip
    inits = {"W1": rng.standard_normal((16, 24)).astype(np.float32), "W2": rng.standard_normal((24, 5)).astype(np.float32)}
    plain = save(tmp_path / "f.onnx", nodes, inits, inputs=(("x", ["N", 16]),), out=("y", ["N", 5]))
    quantize_dynamic(str(plain), str(tmp_path / "q.onnx"), per_channel=True, weight_type=QuantType.QInt8)
    for granularity in ("layer", "op"):
        res = wn("points", tmp_path / "q.onnx", "--granularity", granularity, "--json")
        assert res.returncode == 0, res.stderr
        points = json.loads(res.stdout)["points"]
        assert [p["tensor"] for p in points] == ["x", "h", "r", "y"], points
    res = wn("points", tmp_path / "q.onnx", "--all", "--json")
    others = {v["tensor"]: v["shape"] for v in json.loads(res.stdout)["not_points"]}
    assert others == {"x_scale": [], "x_scale_W1_scale_mul:0": [24], "r_scale": [], "r_scale_W2_scale_mul:0": [5]}


# ---------------------------------------------------------------- item 4: graphs that mix the rows
def test_a_graph_that_mixes_its_rows_needs_a_batch_of_one(tmp_path):
    """y = x·w − 3·mean over the batch of x·w: a sample's output depends on the rows it runs with,
    so the samples per run would change the report. Refused in one line, saying that a batch of
    1 is exact; with --batch-size 1 it scans, and its clean accuracy is what onnxruntime gives on
    the whole graph one sample at a time (not what a batch of 60 gives)."""
    import onnxruntime as ort

    after = [helper.make_node("ReduceMean", ["z"], ["s"], axes=[0], keepdims=1),
             helper.make_node("Mul", ["s", "three"], ["s3"]), helper.make_node("Sub", ["z", "s3"], ["y"])]  # fmt: skip
    model = linear(tmp_path / "m.onnx", W, np.zeros(3), after)
    m = onnx.load(str(model))
    m.graph.initializer.append(numpy_helper.from_array(np.array(3, np.float32), "three"))
    onnx.save(m, str(model))
    session = ort.InferenceSession(str(model))
    alone = np.concatenate([session.run(None, {"x": X[i : i + 1]})[0] for i in range(len(X))]).argmax(axis=1)
    batched = session.run(None, {"x": X})[0].argmax(axis=1)
    labels = np.where(np.arange(len(X)) % 3 == 0, batched, alone)  # neither way scores 100 %
    data = samples(tmp_path / "d.npz", labels)
    res = wn("scan", model, "--data", data, *FAST)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "the rows of a batch interact" in res.stderr and "a batch size of 1" in res.stderr, res.stderr
    res = wn("scan", model, "--data", data, *GRID, "--batch-size", "1", "--mode", "walking", "--at", "0", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["clean_accuracy"] == pytest.approx(np.mean(alone == labels))
    assert np.mean(alone == labels) != np.mean(batched == labels)


# ---------------------------------------------------------------- item 6: the output a run really returns
@pytest.mark.parametrize("batch", [1, "N"], ids=["fixed-batch-1", "dynamic"])
def test_an_output_whose_samples_are_not_first_is_refused_with_its_real_shape(tmp_path, batch):
    """A recogniser that declares [1, seqlen] and returns [T, N, K] (time first): its clean runs
    were concatenated on T as if T were samples, and every score compared time steps of other
    samples. Refused in one line naming the declared and the real shape."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0, 2])]  # fmt: skip
    inits = {"w": RNG.standard_normal((4, 30)).astype(np.float32), "shape": np.array([-1, 6, 5], np.int64)}
    model = save(tmp_path / "m.onnx", nodes, inits, inputs=(("x", [batch, 4]),), out=("y", [1, "seqlen"]))
    np.savez(tmp_path / "d.npz", x=X[:20])
    res = wn("scan", model, "--data", tmp_path / "d.npz", "--label-free", *FAST)
    rows = 1 if batch == 1 else 20
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"output 'y' (declared 1×seqlen) has shape 6×{rows}×5 for a run of {rows} samples" in res.stderr, res.stderr


# ---------------------------------------------------------------- item 7: feeds on dimensions declared 0
def test_a_state_declared_with_a_zero_batch_is_fed_per_sample(tmp_path):
    """A GRU state declared [1, 0, 12] (0: free, as PaddlePaddle and some exporters write it) with
    --feed h0=0 is repeated over the batch like one declared [1, N, 12]: the same report, no
    onnxruntime log. Missing inputs are all named."""
    import warnings

    import onnxruntime as ort
    import torch

    class VAD(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru, self.fc = torch.nn.GRU(8, 12, batch_first=True), torch.nn.Linear(12, 2)

        def forward(self, x: torch.Tensor, h0: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y, h = self.gru(x * (sr.float() / 16000), h0)
            return self.fc(y[:, -1]), h

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(VAD().eval(), (torch.randn(2, 5, 8), torch.zeros(1, 2, 12), torch.tensor(16000)),
                          str(tmp_path / "n.onnx"), dynamo=False, input_names=["x", "h0", "sr"], output_names=["y", "hn"],
                          dynamic_axes={"x": {0: "N"}, "h0": {1: "N"}, "y": {0: "N"}, "hn": {1: "N"}})  # fmt: skip
    m = onnx.load(str(tmp_path / "n.onnx"))
    dim = next(i for i in m.graph.input if i.name == "h0").type.tensor_type.shape.dim[1]
    dim.Clear()
    dim.dim_value = 0
    onnx.save(m, str(tmp_path / "zero.onnx"))
    x = np.random.default_rng(0).standard_normal((32, 5, 8)).astype(np.float32)
    y = ort.InferenceSession(str(tmp_path / "n.onnx")).run(["y"], {"x": x, "h0": np.zeros((1, 32, 12), np.float32),
                                                                   "sr": np.array(16000)})[0].argmax(axis=1)  # fmt: skip
    np.savez(tmp_path / "d.npz", x=x, y=np.where(np.arange(32) % 4 == 0, 1 - y, y))  # 75 %
    reports = []
    for name in ("n", "zero"):
        res = wn("scan", tmp_path / f"{name}.onnx", "--data", tmp_path / "d.npz", "--feed", "h0=0",
                 "--feed", "sr=16000", "--mode", "walking", "--at", "0", *GRID, "--json")  # fmt: skip
        assert res.returncode == 0 and "onnxruntime" not in res.stderr, res.stderr
        reports.append(json.loads(res.stdout)["points"][0]["accuracy"])
    assert reports[0] == reports[1]
    res = wn("scan", tmp_path / "zero.onnx", "--data", tmp_path / "d.npz", *FAST)
    assert res.returncode == 2 and "no array for the model's inputs 'h0', 'sr'" in res.stderr, res.stderr


# ---------------------------------------------------------------- item 11: readable tables
@pytest.mark.parametrize("width", [80, 250])
def test_a_long_symbolic_shape_never_drops_the_index_or_the_op(width):
    """A detector's shape is a long symbolic expression: the shape is shortened, and the index,
    the op and a readable tensor name stay."""
    from rich.console import Console

    from wn_onnx.cli.render import points_table

    expression = "floor(floor(floor(floor(height/2 - 1/2)/2 - 1/2)/2 - 1/2)/2 + 1/2)*floor(width/32) + 1" * 4
    point = {"index": 12, "tensor": "/model.22/dfl/conv/Conv_output_0", "op_type": "Conv", "shape": ["N", 64, expression]}
    console = Console(width=width, record=True)
    console.print(points_table([point], None, width))
    header, _rule, row = console.export_text().splitlines()[:3]
    assert header.split()[:3] == ["#", "tensor", "op"], header
    assert row.split()[0] == "12" and "Conv" in row.split() and "N×64×floor" in row, row
    assert "/model.22/dfl/conv/Conv_output_0" in row or width == 80, row


EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "detection.py"


def test_the_detection_example_matches_boxes_by_iou():
    """docs/examples/detection.py on outputs built by hand: the same boxes score 1, one of two
    moved away 0.5, the other class 0, no clean detection and none noisy 1."""
    from wn_onnx.metrics import get_metric

    def output(*boxes: tuple[float, float, float, float, int]) -> np.ndarray:
        out = np.zeros((4 + 2, 8), np.float32)  # 2 classes, 8 anchors
        for a, (cx, cy, w, h, cls) in enumerate(boxes):
            out[:4, a], out[4 + cls, a] = (cx, cy, w, h), 0.9
        return out

    two = output((10, 10, 4, 4, 0), (30, 30, 6, 6, 1))
    noisy = [two, output((10, 10, 4, 4, 0), (50, 50, 6, 6, 1)), output((10, 10, 4, 4, 1), (30, 30, 6, 6, 0)), output()]
    clean = [two, two, two, output()]
    scores = get_metric(f"{EXAMPLE}:score").scores(np.stack(clean), np.stack(noisy), None)
    assert scores.tolist() == [1.0, 0.5, 0.0, 1.0]


def test_a_detector_output_is_pointed_to_a_plugin(tmp_path):
    """[N, 4 + 2, 64 anchors]: top1 refuses it and points to the detection plug-in (per-position
    would score 6 rows of 64 "classes"); scanned with it, label-free, the input's drop is resolved."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["r"]),
             helper.make_node("Sigmoid", ["r"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["y"])]  # fmt: skip
    scale = np.ones((6, 1), np.float32)
    scale[:4] = 40  # boxes in pixels, class scores in [0, 1]
    inits = {"w": RNG.standard_normal((4, 384)).astype(np.float32), "shape": np.array([-1, 6, 64], np.int64), "scale": scale}
    model = save(tmp_path / "det.onnx", nodes, inits, out=("y", ["N", 6, 64]))
    np.savez(tmp_path / "d.npz", x=X)
    res = wn("scan", model, "--data", tmp_path / "d.npz", "--label-free", *FAST)
    assert res.returncode == 2 and "docs/examples/detection.py:score" in res.stderr, res.stderr
    res = wn("scan", model, "--data", tmp_path / "d.npz", "--label-free", "--metric", f"{EXAMPLE}:score",
             "--mode", "walking", "--at", "0", "--sigmas", "log:1e-2:1e2:13", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    point = json.loads(res.stdout)["points"][0]
    assert point["status"] == "ok" and point["a_max"] == 1.0, point
