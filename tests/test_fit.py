"""The μ fit (Eq. 1–2): parameter recovery and every status on curves built to trigger it."""

from __future__ import annotations

import numpy as np
import pytest

from wn_onnx.fit import STATUSES, double_logistic, fit_curve, logistic, threshold_crossing, uncertainty

GRID = np.logspace(-2, 10, 49)


def noisy(curve: np.ndarray, spread: float = 0.005, repeats: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(curve[:, None] + rng.normal(0, spread, (len(curve), repeats)), 0, 1)


@pytest.mark.parametrize(("mu", "slope"), [(0.35, 0.08), (3.0, 1.0), (1e4, 2e3)])
def test_recovers_mu_slope_with_fixed_chance(mu, slope):
    sigma = np.unique(np.concatenate([GRID, np.linspace(mu / 4, mu * 2, 20)]))
    res = fit_curve(sigma, noisy(logistic(sigma, mu, slope, 0.44, 0.1)), chance=0.1, n_samples=10000)
    assert res.status == "ok"
    assert abs(res.mu - mu) < 4 * res.mu_err and res.mu_err < 0.05 * mu
    assert res.slope == pytest.approx(slope, rel=0.2)
    assert res.a_min == 0.1 and not res.a_min_free
    assert res.a_max == pytest.approx(0.98, abs=0.01)
    assert res.mu_threshold == pytest.approx(mu, rel=0.15)


def test_plateau_above_chance_frees_a_min():
    sigma = np.unique(np.concatenate([GRID, np.linspace(0.1, 2, 20)]))
    res = fit_curve(sigma, noisy(logistic(sigma, 0.6, 0.1, 0.3, 0.38)), chance=0.1, n_samples=10000)
    assert res.status == "ok" and res.a_min_free
    assert res.a_min == pytest.approx(0.38, abs=0.01)
    assert res.mu == pytest.approx(0.6, abs=4 * res.mu_err + 0.01)


def test_not_reached_is_a_lower_bound():
    res = fit_curve(GRID, noisy(np.full(len(GRID), 0.9)), chance=0.1, n_samples=10000)
    assert res.status == "not-reached" and res.mu == GRID[-1] and res.mu_err is None


def test_no_drop_from_start():
    res = fit_curve(GRID, noisy(np.full(len(GRID), 0.1)), chance=0.1, n_samples=10000, clean=0.95)
    assert res.status == "no-drop-from-start" and res.mu == GRID[0]


def test_two_drops():
    curve = double_logistic(GRID, 0.5, 0.1, 0.2, 1e4, 2e3, 0.2, 0.1)
    res = fit_curve(GRID, noisy(curve), chance=0.1, n_samples=10000)
    assert res.status == "two-drops"
    drops = [d["mu"] for d in res.drops]
    assert drops[0] == pytest.approx(0.5, rel=0.1) and drops[1] == pytest.approx(1e4, rel=0.1)


def test_poor_fit_falls_back_to_threshold():
    # A slow power-law decay over many decades: no single logistic in σ fits it.
    sigma = GRID
    curve = 0.1 + 0.85 / (1 + (sigma / 0.3) ** 0.35)
    res = fit_curve(sigma, noisy(curve, spread=0.002), chance=0.1, n_samples=10000)
    assert res.status == "poor-fit"
    assert res.mu == res.mu_threshold and (res.chi2_red is None or res.chi2_red > 50)
    assert res.mu == pytest.approx(threshold_crossing(sigma, curve, (curve[0] + 0.1) / 2), rel=0.2)


def test_overflowed_sigmas_are_left_out():
    sigma = GRID
    curve = logistic(sigma, 0.4, 0.1, 0.45, 0.1)
    acc = noisy(curve)
    acc[sigma > 1e3] = 0.0  # NaN outputs counted as wrong
    res = fit_curve(sigma, acc, chance=0.1, n_samples=10000, exclude=sigma > 1e3)
    assert res.status == "ok" and "left out of the fit" in res.note


def test_zero_spread_is_floored():
    _y, dy = uncertainty(np.ones((3, 5)) * 0.5, n_samples=1000)
    assert np.all(dy > 0) and np.allclose(dy, np.hypot(np.sqrt(0.25 / 5000), 0.005))


def test_statuses_are_the_documented_set():
    assert STATUSES == ("ok", "not-reached", "no-drop-from-start", "poor-fit", "two-drops")
