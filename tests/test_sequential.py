"""The sequential estimator (wn_onnx.results.sequential): per-sample outcomes from the engine equal the
grid's, μ from simulated curves with a known answer is unbiased with calibrated errors, and on
the embedded digits model it agrees with the full grid at a small share of its evaluations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import config_of
from scipy.stats import norm

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.errors import ConfigError
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import load_npz
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec, default_grid
from wn_onnx.results.fit import _UNIT
from wn_onnx.results.schema import schema_problems
from wn_onnx.results.sequential import estimate
from wn_onnx.scanner import run_scan

A_MAX, CHANCE = 0.95, 0.1


def simulated(shape: str, mu: float, s: float, n: int, repeats: int, seed: int):
    """Outcomes of a curve with known μ: sample i under draw r is correct while p(σ) exceeds its
    own uniform U[r, i] — every trial has exactly probability p(σ), and a (sample, draw) reused
    at another σ is strongly correlated with itself, as with the engine's common random numbers.
    ``probit`` (a normal CDF in log σ) is none of the fitted shapes."""
    u = np.random.default_rng(seed).random((repeats, n))

    def p(sigma: float) -> float:
        z = (np.log(sigma) - np.log(mu)) / s
        return CHANCE + (A_MAX - CHANCE) * float(norm.sf(z) if shape == "probit" else _UNIT[shape](z))

    return lambda sigma, rows, r: (u[r, rows] < p(sigma), np.zeros(len(rows), bool))


TOLERANCE = 0.05
CURVES = [(shape, mu, s) for shape, mu in (("log", 0.5), ("frechet", 3.0), ("probit", 0.05)) for s in (0.5, 1.0)]


def fewest_trials(shape: str, mu: float, s: float) -> float:
    """The information bound of the true curve (as benchmarks/bench_scale.fewest_trials on a fit):
    1/(I_max·tolerance²), I_max the largest Fisher information of one outcome about log μ."""
    z = np.linspace(-8, 8, 4001)
    p = CHANCE + (A_MAX - CHANCE) * (norm.sf(z) if shape == "probit" else _UNIT[shape](z))
    dp = np.gradient(p, z) / s  # ∂p/∂log σ = −∂p/∂log μ
    return float(1 / (np.max(dp**2 / (p * (1 - p))) * TOLERANCE**2))


@pytest.fixture(scope="module")
def simulated_runs() -> dict:
    """100 replicate runs per curve at the default tolerance on 1,000 samples × 5 draws: a
    logistic and a Fréchet curve in log σ and a normal CDF in log σ (none of the fitted shapes),
    each at a drop width s of 0.5 and 1 (information bounds 180–2,200 trials)."""
    n, repeats, runs = 1000, 5, 100
    out = {}
    for shape, mu, s in CURVES:
        curves = [estimate(simulated(shape, mu, s, n, repeats, run), n, repeats, 1e-2, 1e10, A_MAX, CHANCE,
                           49 * n * repeats, TOLERANCE, seed=run) for run in range(runs)]  # fmt: skip
        for curve in curves:
            assert curve["status"] == "ok" and curve["sequential"]["converged"], curve["fit"]
        out[shape, mu, s] = curves
    return out


@pytest.mark.slow
def test_simulated_curves_unbiased_with_calibrated_errors(simulated_runs):
    """The mean μ is within 3 % of the truth for each curve, and |μ − truth| ≤ μ_err in 60–76 %
    of all 600 runs (68 % when the errors are calibrated; the bounds are 4 standard errors away)."""
    covered = []
    for (shape, mu, s), curves in simulated_runs.items():
        mus, errs = np.array([c["mu"] for c in curves]), np.array([c["mu_err"] for c in curves])
        assert abs(np.mean(mus) / mu - 1) < 0.03, (shape, s, np.mean(mus))
        assert max(c["sequential"]["fraction"] for c in curves) <= 0.05
        covered += list(np.abs(mus - mu) <= errs)
    assert 0.60 <= np.mean(covered) <= 0.76, np.mean(covered)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured 1.4–4.6× the bound per curve (mean 2.8) (docs/method.md, 'Sequential estimator')")
def test_simulated_curves_near_the_information_bound(simulated_runs):
    """On average the trials used are at most 1.3× the fewest any design could use for ±5 % on
    that curve with slope and shape known (issue #30's target)."""
    ratios = {key: np.mean([c["sequential"]["evaluations"] for c in curves]) / fewest_trials(*key)
              for key, curves in simulated_runs.items()}  # fmt: skip
    assert np.mean(list(ratios.values())) <= 1.3, ratios


def chip_outcomes(mu: float, s: float, n: int, repeats: int, tau: float, seed: int, sideways: bool, rho: float = 0.9):
    """Weight noise: each repeat is one chip, a draw g_r that all its samples share. ``sideways``:
    chip r's curve is the curve shifted by τ·g_r in log σ (its own μ, plateaus untouched); else
    sample i is right under chip r while Φ(ρ·a_i + √(1−ρ²−τ²)·e_ir + τ·g_r) < p(σ) (a probit shift;
    the population accuracy is exactly p(σ)). Both share each sample's difficulty a_i over chips."""
    rng = np.random.default_rng(seed)
    a, e, g = rng.standard_normal(n), rng.standard_normal((repeats, n)), rng.standard_normal(repeats)
    own = np.sqrt(1 - rho**2 - (0 if sideways else tau**2))
    v = norm.cdf(rho * a + own * e + (0 if sideways else tau * g[:, None]))

    def p(sigma: float, shift: float) -> float:
        return CHANCE + (A_MAX - CHANCE) * float(_UNIT["log"]((np.log(sigma) - np.log(mu) - shift) / s))

    return lambda sigma, rows, r: (v[r, rows] < p(sigma, tau * g[r] if sideways else 0.0), np.zeros(len(rows), bool))


def population_mu(mu: float, s: float, tau: float) -> float:
    """μ of the mean curve over sideways-shifted chips (not μ itself: the shifts widen the drop)."""
    from scipy.optimize import brentq

    g = np.linspace(-6, 6, 2001)
    w = norm.pdf(g) / norm.pdf(g).sum()
    return float(np.exp(brentq(lambda x: w @ _UNIT["log"]((x - np.log(mu) - tau * g) / s) - 0.5, -20, 20)))


@pytest.mark.slow
@pytest.mark.parametrize(("tau", "sideways", "repeats"), [(0.0, False, 10), (0.1, False, 10), (0.1, True, 10), (0.3, True, 10),
                                                          (0.3, True, 5)])  # fmt: skip
def test_weight_noise_errors_are_calibrated_over_chips(tau, sideways, repeats):
    """Weight noise (``chips``): trials are correlated within a chip, so μ's error is a jackknife over
    the chips. 200 runs on 1,000 samples: |μ − truth| ≤ μ_err in 60–76 % (measured 63–76 %; trials
    taken as independent, one chip after another, cover 9 % at τ = 0.3 sideways), ≤ 1.96 μ_err in
    ≥ 88 % (measured 89–97 %), bias < 3 % (measured ≤ 1 %); with no chip effect
    (τ = 0) the tolerance is reached, with a large one the estimate stops early and says why."""
    n, mu, s, runs = 1000, 0.5, 0.3, 200
    truth = population_mu(mu, s, tau) if sideways else mu
    mus, z, converged = [], [], []
    for run in range(runs):
        curve = estimate(chip_outcomes(mu, s, n, repeats, tau, run, sideways), n, repeats, 1e-2, 1e2, A_MAX, CHANCE,
                         49 * n * repeats, 0.05, seed=run, chips=True)  # fmt: skip
        if curve["status"] == "ok":
            mus.append(curve["mu"])
            z.append(abs(curve["mu"] - truth) / curve["mu_err"])
            converged.append(curve["sequential"]["converged"])
            if not converged[-1]:
                assert "more --repeats" in curve["fit"]["note"], curve["fit"]["note"]
    z = np.array(z)
    assert len(z) >= 0.97 * runs and abs(np.mean(mus) / truth - 1) < 0.03
    assert 0.60 <= np.mean(z <= 1) <= 0.76 and np.mean(z <= 1.96) >= 0.88, (np.mean(z <= 1), np.mean(z <= 1.96))
    assert np.mean(converged) >= (0.9 if tau == 0 else 0.0)


def test_statuses_that_bound_mu():
    """No drop inside the range: not-reached at its top; below the midpoint from the start:
    no-drop-from-start at its bottom — decided by the two probes, without placing any trial."""
    n = 400
    high = estimate(simulated("log", 1e12, 0.5, n, 5, 0), n, 5, 1e-2, 1e10, A_MAX, CHANCE, 49 * n * 5)
    assert (high["status"], high["mu"], high["fit"]["bracket"]) == ("not-reached", 1e10, [1e10, None])
    low = estimate(simulated("log", 1e-4, 0.5, n, 5, 0), n, 5, 1e-2, 1e10, A_MAX, CHANCE, 49 * n * 5)
    assert (low["status"], low["mu"]) == ("no-drop-from-start", 1e-2)
    # not-reached needs the drop at σ_hi shown smaller than MIN_DROP of the span: 64 trials all right do
    assert high["sequential"]["evaluations"] == 64 and low["sequential"]["evaluations"] == 256 + 64


def test_a_small_real_drop_is_not_called_not_reached_on_a_few_trials():
    """A model near chance (clean 0.22, 10 classes) whose accuracy does fall: 64 trials at σ_hi
    cannot tell that drop from none (the first version said `not-reached μ > 1e10` there, as on a
    briefly trained transformer whose grid curve fell); more trials there can."""
    u = np.random.default_rng(2).random((5, 1000))
    p = lambda sig: CHANCE + 0.12 * float(_UNIT["log"]((np.log(sig) - np.log(1e6)) / 0.8))  # noqa: E731
    curve = estimate(lambda sig, rows, r: (u[r, rows] < p(sig), np.zeros(len(rows), bool)), 1000, 5, 1e-2, 1e10,
                     0.22, CHANCE, 49 * 5000)  # fmt: skip
    assert curve["status"] != "not-reached", curve["fit"]["note"]
    assert curve["sigmas"][-1] == 1e10 and curve["sequential"]["trials"][-1] > 64
    # nor `ok` with an error larger than μ itself when the budget ran out: unresolved, with the bracket check judges
    assert curve["status"] != "ok" or 1.96 * curve["mu_err"] < curve["mu"], (curve["mu"], curve["mu_err"])
    assert curve["status"] != "poor-fit" or curve["fit"]["bracket"][0] < curve["mu"]


def test_a_min_above_chance_is_measured():
    """A curve ending on a plateau clearly above chance: a_min is that plateau, and μ is the
    midpoint between it and a_max."""
    u = np.random.default_rng(1).random((5, 1000))
    p = lambda sig: 0.5 + 0.45 * float(_UNIT["log"]((np.log(sig) - np.log(2.0)) / 0.4))  # noqa: E731
    curve = estimate(lambda sig, rows, r: (u[r, rows] < p(sig), np.zeros(len(rows), bool)), 1000, 5, 1e-2, 1e10,
                     A_MAX, CHANCE, 49 * 5000)  # fmt: skip
    assert curve["fit"]["a_min_free"] and abs(curve["a_min"] - 0.5) < 3 * curve["fit"]["a_min_err"]
    assert curve["status"] == "ok" and abs(curve["mu"] - 2.0) <= 2 * curve["mu_err"]


def test_two_drops_are_a_poor_fit_not_a_precise_mu():
    """A fall to a plateau near the midpoint, then a second fall (paper Fig. 8): no single drop
    describes the outcomes, so the estimate stops early as `poor-fit`, with μ's 95 % posterior
    interval as the bracket `check` judges, instead of spending its budget on a μ that means little."""
    u = np.random.default_rng(0).random((5, 1000))

    def p(sig: float) -> float:
        x = np.log(sig)
        return CHANCE + 0.45 * float(_UNIT["log"]((x - np.log(0.1)) / 0.3)) + 0.4 * float(_UNIT["log"]((x - np.log(100)) / 0.3))

    curve = estimate(lambda sig, rows, r: (u[r, rows] < p(sig), np.zeros(len(rows), bool)), 1000, 5, 1e-2, 1e10,
                     A_MAX, CHANCE, 49 * 5000)  # fmt: skip
    assert curve["status"] == "poor-fit" and curve["fit"]["chi2_red"] > 10
    low, high = curve["fit"]["bracket"]
    assert low < curve["mu"] < high and curve["sequential"]["fraction"] <= 0.05


@pytest.fixture(scope="module")
def digits():
    loaded, data = load_model(DEFAULT_MODEL), load_npz(DEFAULT_DATA)
    return loaded, data, find_points(loaded.model)


def test_a_curve_still_falling_at_the_top_has_chance_as_a_min():
    """A curve cut off mid-drop by the end of the axis (bit flips stop at a rate of 0.5): its last
    accuracy lies above chance but is no plateau, so a_min is chance, as the grid fit decides (the
    first version took the last value as a_min and put μ at the midpoint of a drop to nowhere)."""
    u = np.random.default_rng(3).random((5, 1000))
    p = lambda sig: CHANCE + (A_MAX - CHANCE) * float(_UNIT["log"]((np.log(sig) - np.log(0.08)) / 0.3))  # noqa: E731
    curve = estimate(lambda sig, rows, r: (u[r, rows] < p(sig), np.zeros(len(rows), bool)), 1000, 5, 1e-9, 0.1, A_MAX,
                     CHANCE, 17 * 5000)  # fmt: skip
    assert p(0.1) > 0.3 and not curve["fit"]["a_min_free"] and curve["a_min"] == CHANCE
    assert curve["status"] == "ok" and abs(curve["mu"] - 0.08) <= 2 * curve["mu_err"], (curve["mu"], curve["mu_err"])
    falling = estimate(lambda sig, rows, r: (u[r, rows] < p(sig * 0.5), np.zeros(len(rows), bool)), 1000, 5, 1e-9, 0.1,
                       A_MAX, CHANCE, 17 * 5000)  # fmt: skip
    assert falling["status"] == "not-reached" and "midpoint" in falling["fit"]["note"]  # above the midpoint at the top


@pytest.mark.parametrize(
    ("settings", "agree"),
    [({"noise": "mul", "on": "weights"}, 4), ({"noise": "bitflip"}, 9), ({"noise": "bitflip", "on": "weights"}, 3)],
)
def test_weight_and_numpy_models_agree_with_the_grid(settings, agree):
    """Weight noise (one draw per repeat: trials cycle over the chips, μ's error a jackknife over
    them) and bit flips applied in numpy: the same status as the grid's with the same bound, or both
    `ok` with μ within twice the combined error (measured: 4/4 weight points on mul, 9/11 bit-flip
    activation points — the other two are `poor-fit` at the top of the axis where the grid says
    `not-reached` — and 3/4 bit-flip weight points)."""
    import wn_onnx

    grid = wn_onnx.scan(mode="walking", **settings)
    seq = wn_onnx.scan(mode="walking", estimator="sequential", **settings)
    same = []
    for a, b in zip(grid.points, seq.points, strict=True):
        if a.status == b.status == "ok":
            same.append(abs(a.mu - b.mu) <= 2 * np.hypot(a.mu_err, b.mu_err))
        else:
            same.append(a.status == b.status and a.mu == b.mu)
        assert b.status != "poor-fit" or b.mu > 0.9 * max(a.sigmas), (a.index, b.mu)  # only at the axis's end
    assert sum(same) >= agree, same
    if settings.get("on") == "weights":
        assert sum(p.status == "ok" for p in seq.points) == sum(p.status == "ok" for p in grid.points)


def test_chip_trials_spread_evenly_over_the_repeats():
    """With ``chips`` every batch of trials spreads over the repeats (one chip after another would
    measure the first chip only, and cover the truth 9 % of the time at τ = 0.3), each repeat's
    samples in its own order, no (sample, repeat) pair used twice before all are."""
    seen: dict[int, list[int]] = {}
    inner = chip_outcomes(0.5, 0.3, 1000, 10, 0.1, 0, True)

    def outcomes(sigma, rows, r):
        seen.setdefault(r, []).extend(int(i) for i in rows)
        return inner(sigma, rows, r)

    curve = estimate(outcomes, 1000, 10, 1e-2, 1e2, A_MAX, CHANCE, 49 * 10_000, 0.05, seed=0, chips=True)
    counts = [len(seen[r]) for r in range(10)]
    assert curve["status"] == "ok" and max(counts) - min(counts) <= len(curve["sigmas"]), counts
    assert all(len(set(v)) == len(v) for v in seen.values())  # fewer trials than samples per chip: none twice


def test_bit_widths_are_refused_with_one_line():
    import wn_onnx

    with pytest.raises(ConfigError, match="continuous axis; bits are whole numbers"):
        wn_onnx.scan(noise="quant", estimator="sequential")


@pytest.mark.parametrize("kind", ["add", "mul"])
def test_outcomes_are_the_grid_sweeps_per_sample(digits, kind):
    """Engine.outcomes of all samples sums to the grid's count at that σ and repeat; any subset,
    in any order and batch size, gives those samples the same outcomes (their draws are keyed
    by sample index), for a walked point and for global noise."""
    loaded, data, points = digits
    spec = NoiseSpec(kind)
    st = SweepSettings(np.array([0.0, 0.3, 1.0, 3.0]), spec, repeats=2, seed=4, batch_size=100)
    engine = Engine(loaded, ["CPUExecutionProvider"], threads=1)
    rows = np.random.default_rng(0).permutation(len(data))[:150]
    for ev, counts in (
        (engine.walker(points[3], data, st), engine.walk(points[3], data, st, lambda _n: None)),
        (engine.global_noise(points, st), engine.global_sweep(points, data, st, lambda _n: None)),
    ):
        for j, sigma in enumerate(st.sigmas):
            for r in range(st.repeats):
                every, _ = engine.outcomes(ev, data, st, float(sigma), np.arange(len(data)), r)
                assert every.sum() == counts.correct[j, r], (sigma, r)
                some, _ = engine.outcomes(ev, data, SweepSettings(st.sigmas, spec, 2, 4, 64), float(sigma), rows, r)
                assert np.array_equal(some, every[rows])


def test_outcomes_on_a_built_in_batch(tmp_path):
    """A model whose batch of 4 is built in: subsets of any length are padded, and the padding
    counts nowhere."""
    import torch
    from corpus import BakedBatch, export

    from wn_onnx.io.data import Dataset

    torch.manual_seed(0)
    loaded = load_model(export(BakedBatch(), (12,), tmp_path / "baked.onnx", fixed=4))
    assert loaded.fixed_batch == 4
    rng = np.random.default_rng(0)
    data = Dataset(rng.standard_normal((30, 12)).astype(np.float32), rng.integers(0, 4, 30), "random")
    st = SweepSettings(np.array([0.5, 2.0]), NoiseSpec("add"), repeats=2, seed=1, batch_size=4)
    engine = Engine(loaded, ["CPUExecutionProvider"], threads=1)
    point = find_points(loaded.model)[1]
    counts = engine.walk(point, data, st, lambda _n: None)
    ev = engine.walker(point, data, st)
    for j, sigma in enumerate(st.sigmas):
        for r in range(2):
            every, _ = engine.outcomes(ev, data, st, float(sigma), np.arange(30), r)
            assert len(every) == 30 and every.sum() == counts.correct[j, r]
            some, _ = engine.outcomes(ev, data, st, float(sigma), np.array([29, 3, 17, 8, 0, 11, 22]), r)
            assert np.array_equal(some, every[[29, 3, 17, 8, 0, 11, 22]])


@pytest.fixture(scope="module")
def digits_both(digits):
    """The embedded model walked at its 11 points plus global noise, grid and sequential."""
    loaded, data, _ = digits
    st = SweepSettings(default_grid(NoiseSpec("add")), NoiseSpec("add"), repeats=5, seed=0)
    return {e: run_scan(loaded, data, config_of(st, dict(estimator=e))) for e in ("grid", "sequential")}


def test_real_model_agrees_with_the_full_grid(digits_both):
    """Every curve: the grid's status, ≤ 5 % of the grid's 49 σ × 5 repeats × samples, μ_err
    within the tolerance; μ within twice the combined error (the 95 % level, as `check` compares
    against a baseline) at ≥ 90 % of the 12 curves (measured: 11/12 at seed 0)."""
    grid, seq = digits_both["grid"], digits_both["sequential"]
    assert (grid["estimator"], seq["estimator"]) == ("grid", "sequential")
    assert schema_problems(seq) == []
    agree = []
    for ref, got in zip([*grid["points"], grid["global"]], [*seq["points"], seq["global"]], strict=True):
        assert ref["status"] == got["status"] == "ok"
        agree.append(abs(ref["mu"] - got["mu"]) <= 2 * np.hypot(ref["mu_err"], got["mu_err"]))
        used = got["sequential"]
        assert used["converged"] and got["mu_err"] <= 0.05 * got["mu"]
        assert used["grid_evaluations"] == 49 * 5 * 359 and used["fraction"] <= 0.05
        assert used["evaluations"] == sum(used["trials"])
    assert np.mean(agree) >= 0.9, agree


def test_sequential_is_reproducible_and_keyed_by_settings(digits, digits_both):
    """Same settings, same report (the sample order and every draw are seeded); the estimator
    is part of the stored-curve key, so a resumed grid scan never takes sequential curves."""
    loaded, data, _ = digits
    st = SweepSettings(default_grid(NoiseSpec("add")), NoiseSpec("add"), repeats=5, seed=0)
    again = run_scan(loaded, data, config_of(st, dict(mode="walking", at="3", estimator="sequential")))
    assert again["points"][0] == digits_both["sequential"]["points"][3]
    assert again["config_hash"] != run_scan(loaded, data, config_of(st, dict(mode="global", at="3")))["config_hash"]


@pytest.mark.parametrize(
    ("request_", "settings", "message"),
    [
        ({"estimator": "sequential", "adaptive": True}, {}, "exclude each other"),
        ({"estimator": "quest"}, {}, "unknown estimator"),
        ({"estimator": "sequential"}, {"redraw": True}, "fresh noise per σ"),
        ({"estimator": "sequential"}, {"spec": NoiseSpec("mixed", "mul-first", sigma_mul=0.5)}, "starts clean"),
        ({"estimator": "sequential"}, {"sigmas": np.array([0.0])}, "no σ > 0"),
    ],
)
def test_bad_combinations_are_one_clear_error(digits, request_, settings, message):
    loaded, data, _ = digits
    with pytest.raises(ConfigError, match=message):
        st = SweepSettings(**{"sigmas": np.array([0.1, 1.0]), "spec": NoiseSpec("add"), **settings})
        run_scan(loaded, data, config_of(st, dict(**request_)))


def test_cli_scan_and_check_take_the_estimator(tmp_path):
    from typer.testing import CliRunner

    from wn_onnx.cli.app import app

    scan = tmp_path / "s.json"
    res = CliRunner().invoke(app, ["scan", "--estimator", "sequential", "--mode", "walking", "--at", "1", "--quiet",
                                   "--out", str(scan)])  # fmt: skip
    assert res.exit_code == 0, res.output
    point = json.loads(scan.read_text())["points"][0]
    assert point["status"] == "ok" and point["sequential"]["fraction"] <= 0.05
    assert "evaluations" in res.output
    check = tmp_path / "c.json"
    res = CliRunner().invoke(app, ["check", str(DEFAULT_MODEL), "--data", str(DEFAULT_DATA), "--estimator", "sequential",
                                   "--tolerance", "0.1", "--mode", "walking", "--at", "1", "--min-mu", "0.1",
                                   "--out", str(check)])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(check.read_text())
    assert report["estimator"] == "sequential" and report["points"][0]["sequential"]["tolerance"] == 0.1


def test_api_with_relative_sigma_agrees_with_the_grid():
    """wn_onnx.scan takes the estimator; with σ in units of the activation std the sequential
    estimator measures in those units too."""
    import wn_onnx

    grid = wn_onnx.scan(mode="walking", at="1", sigma_scale="std").points[0]
    seq = wn_onnx.scan(mode="walking", at="1", sigma_scale="std", estimator="sequential").points[0]
    assert seq.status == grid.status == "ok" and seq.activation_std == grid.activation_std is not None
    assert abs(seq.mu - grid.mu) <= 2 * np.hypot(seq.mu_err, grid.mu_err)
