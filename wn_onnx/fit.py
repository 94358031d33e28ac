"""The midpoint noise level μ (paper Eq. 1–2) and an honest status for every curve.

``F(σ; μ, s, δa, a_min) = 2 / (1 + exp((σ − μ)/s)) · δa + a_min`` is fitted by weighted least
squares (scipy.optimize.curve_fit), residuals divided by the observed uncertainty Δy of the mean
accuracy over repeats, floored by the binomial standard error so that a zero spread cannot blow
up the weights, plus a model term (see :func:`uncertainty`). a_min is the chance level 1/K unless the curve plateaus above chance, then it is
free. The threshold crossing of (a_max + a_min)/2 is always computed as a sanity check and as the
fallback of a poor fit.

Statuses: ``ok``; ``not-reached`` (never fell to the midpoint: μ is a lower bound, the largest σ);
``no-drop-from-start`` (already at the midpoint at the smallest σ: μ is an upper bound);
``poor-fit`` (μ is the threshold crossing; see ``chi2_red``); ``two-drops`` (a plateau, then a
second fall: two logistics are fitted, μ is where their sum crosses the overall midpoint).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

STATUSES = ("ok", "not-reached", "no-drop-from-start", "poor-fit", "two-drops")
MAX_CHI2_RED = 50.0  # above this a single logistic does not describe the curve
MODEL_DY = 0.005  # half an accuracy point: the logistic's own model error, added in quadrature


@dataclass
class FitResult:
    status: str
    mu: float | None
    mu_err: float | None
    slope: float | None
    a_max: float
    a_min: float
    a_min_free: bool
    chi2_red: float | None
    mu_threshold: float | None
    note: str = ""
    drops: list[dict] | None = None

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def logistic(sigma: np.ndarray, mu: float, slope: float, da: float, a_min: float) -> np.ndarray:
    """Eq. 1, written with expit so huge (σ − μ)/s never overflows."""
    return 2.0 * expit(-(sigma - mu) / slope) * da + a_min


def double_logistic(
    sigma: np.ndarray, mu1: float, s1: float, d1: float, mu2: float, s2: float, d2: float, a_min: float
) -> np.ndarray:
    return logistic(sigma, mu1, s1, d1, 0.0) + logistic(sigma, mu2, s2, d2, a_min)


def uncertainty(acc: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean accuracy per σ and its uncertainty Δy: the spread of the mean over repeats, floored
    by the binomial standard error, with MODEL_DY added in quadrature. With thousands of images
    and common random numbers the statistical Δy alone is far smaller than anything a logistic
    in σ can describe (tails of real curves are longer), and every fit would be "poor"."""
    acc = np.atleast_2d(np.asarray(acc, dtype=np.float64))
    reps = acc.shape[1]
    y = acc.mean(axis=1)
    spread = acc.std(axis=1, ddof=1) / np.sqrt(reps) if reps > 1 else np.zeros_like(y)
    n = max(int(n_samples), 1)
    p = np.clip(y, 1.0 / n, 1.0 - 1.0 / n)
    floor = np.sqrt(p * (1 - p) / (n * reps))
    return y, np.hypot(np.maximum(spread, floor), MODEL_DY)


def threshold_crossing(sigma: np.ndarray, y: np.ndarray, level: float) -> float | None:
    """First σ where the curve falls below ``level``, linearly interpolated."""
    below = np.flatnonzero(y < level)
    if below.size == 0:
        return None
    i = int(below[0])
    if i == 0:
        return float(sigma[0])
    x0, x1, y0, y1 = sigma[i - 1], sigma[i], y[i - 1], y[i]
    return float(x0 + (y0 - level) * (x1 - x0) / (y0 - y1)) if y0 != y1 else float(x1)


def _chi2(model: np.ndarray, y: np.ndarray, dy: np.ndarray) -> float:
    return float(np.sum(((model - y) / dy) ** 2))


def _plateau_form(sigma: np.ndarray, mu: float, slope: float, a_max: float, a_min: float) -> np.ndarray:
    """Eq. 1 parametrised by its plateaus (a_max = a_min + 2δa) so both can be bounded to [0, 1]."""
    return logistic(sigma, mu, slope, (a_max - a_min) / 2, a_min)


def _fit_single(sigma, y, dy, a_top, chance, free, mu0):
    """Best single-logistic fit over a few starting slopes: ((μ, s, a_max, a_min), cov, chi2) or None."""
    lo_mu, hi_mu = float(sigma.min()), float(sigma.max())
    tiny = max(hi_mu * 1e-12, 1e-15)
    best = None
    for frac in (0.02, 0.1, 0.3, 1.0):
        s0 = max(abs(mu0) * frac, tiny * 10)
        if free:
            f = _plateau_form
            p0 = [mu0, s0, a_top, y[-1]]
            bounds = ([lo_mu, tiny, 0.0, 0.0], [hi_mu, hi_mu, 1.0, 1.0])
        else:

            def f(s, mu, slope, a_max):
                return _plateau_form(s, mu, slope, a_max, chance)

            p0 = [mu0, s0, a_top]
            bounds = ([lo_mu, tiny, chance], [hi_mu, hi_mu, 1.0])
        p0 = np.clip(p0, bounds[0], bounds[1])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(f, sigma, y, p0=p0, sigma=dy, absolute_sigma=True, bounds=bounds, max_nfev=4000)
        except (RuntimeError, ValueError):
            continue
        chi2 = _chi2(f(sigma, *popt), y, dy)
        if best is None or chi2 < best[2]:
            full = popt if free else np.append(popt, chance)
            best = (full, pcov, chi2)
    return best


def _fit_double(sigma, y, dy, chance, free):
    """Two stacked logistics, from starts spread over the grid; (params, cov, chi2) or None."""
    n = len(sigma)
    lo_mu, hi_mu = float(sigma.min()), float(sigma.max())
    tiny = max(hi_mu * 1e-12, 1e-15)
    best = None
    starts = sorted({int(i) for i in np.linspace(1, n - 2, 6)})
    amin0 = y[-1] if free else chance
    for a, b in ((a, b) for a in starts for b in starts if b > a):
        m1, m2 = sigma[a], sigma[b]
        p0 = [
            m1,
            max(m1 * 0.2, tiny * 10),
            max((y[0] - y[(a + b) // 2]) / 2, 1e-3),
            m2,
            max(m2 * 0.2, tiny * 10),
            max((y[(a + b) // 2] - amin0) / 2, 1e-3),
            amin0,
        ]
        lower = [lo_mu, tiny, 0.0, lo_mu, tiny, 0.0, 0.0 if free else chance - 1e-9]
        upper = [hi_mu, hi_mu, 1.0, hi_mu, hi_mu, 1.0, 1.0 if free else chance + 1e-9]
        p0 = np.clip(p0, lower, upper)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(
                    double_logistic,
                    sigma,
                    y,
                    p0=p0,
                    sigma=dy,
                    absolute_sigma=True,
                    bounds=(lower, upper),
                    max_nfev=4000,
                )
        except (RuntimeError, ValueError):
            continue
        chi2 = _chi2(double_logistic(sigma, *popt), y, dy)
        if best is None or chi2 < best[2]:
            best = (popt, pcov, chi2)
    return best


def fit_curve(
    sigmas, accuracy, chance: float, n_samples: int, clean: float | None = None,
    max_chi2_red: float = MAX_CHI2_RED, exclude: np.ndarray | None = None,
) -> FitResult:  # fmt: skip
    """Fit one accuracy-vs-σ curve (``accuracy``: σ × repeats) and classify it.

    ``exclude`` marks σ values left out of the fit (those where outputs overflowed to NaN/Inf:
    their accuracy measures float32 range, not the noise model); the note says how many.
    """
    sigma = np.asarray(sigmas, dtype=np.float64)
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if exclude is not None and np.any(exclude):
        keep = ~np.asarray(exclude, dtype=bool)
        dropped = int(np.sum(~keep))
        if keep.sum() < 2:
            return FitResult("poor-fit", None, None, None, float(clean or 0.0), chance, False, None, None,
                             f"{dropped} of {len(sigma)} σ values gave NaN/Inf outputs; too few left to fit")  # fmt: skip
        res = fit_curve(sigma[keep], accuracy[keep], chance, n_samples, clean, max_chi2_red)
        res.note = (
            res.note + " " if res.note else ""
        ) + f"{dropped} σ value(s) ≥ {sigma[~keep].min():g} left out of the fit: NaN/Inf outputs (overflow)."
        return res
    y, dy = uncertainty(accuracy, n_samples)
    a_top = float(clean) if clean is not None else float(y[0])
    total = a_top - chance
    sigma_lo, sigma_hi = float(sigma[0]), float(sigma[-1])

    def result(
        status,
        mu,
        err=None,
        slope=None,
        a_max=a_top,
        a_min=chance,
        free=False,
        chi2=None,
        thr=None,
        note="",
        drops=None,
    ):
        return FitResult(status, mu, err, slope, float(a_max), float(a_min), free, chi2, thr, note, drops)

    if total <= 0 or y[0] <= chance + total / 2:
        return result(
            "no-drop-from-start",
            sigma_lo,
            thr=sigma_lo,
            note=f"accuracy is already at or below the midpoint at the smallest σ ({sigma_lo:g}): μ ≤ {sigma_lo:g}",
        )
    tail = y[-3:] if len(y) >= 3 else y[-1:]
    tail_dy = float(np.max(dy[-len(tail) :]))
    flat_tail = float(tail.max() - tail.min()) <= max(4 * tail_dy, 0.02 * total)
    plateau = float(tail.mean())
    free = flat_tail and plateau - chance > max(5 * tail_dy, 0.1 * total)
    a_min = plateau if free else chance
    if a_top - a_min < max(5 * tail_dy, 0.05 * total):
        return result(
            "not-reached",
            sigma_hi,
            a_min=a_min,
            note=f"accuracy never fell to the midpoint up to σ = {sigma_hi:g}: μ > {sigma_hi:g}",
        )
    half = (a_top + a_min) / 2
    thr = threshold_crossing(sigma, y, half)
    if thr is None:
        return result(
            "not-reached",
            sigma_hi,
            a_min=a_min,
            free=free,
            note=f"accuracy never fell to the midpoint up to σ = {sigma_hi:g}: μ > {sigma_hi:g}",
        )
    dof_single = max(len(sigma) - (4 if free else 3), 1)
    single = _fit_single(sigma, y, dy, a_top, chance, free, thr)
    chi2_red = single[2] / dof_single if single else np.inf

    if single is None or chi2_red > max_chi2_red:
        double = _fit_double(sigma, y, dy, chance, free) if len(sigma) >= 9 else None
        if double is not None:
            popt, pcov, chi2_2 = double
            chi2_red_2 = chi2_2 / max(len(sigma) - 7, 1)
            mu1, s1, d1, mu2, s2, d2, amin2 = popt
            separated = min(mu1, mu2) > 0 and max(mu1, mu2) / min(mu1, mu2) >= 3
            substantial = min(d1, d2) >= 0.15 * (d1 + d2)
            # both drops inside the grid with a measured plateau between them, not a drop pinned
            # to the grid's edge that only soaks up a curve's slow start or tail
            inside = sigma[1] < min(mu1, mu2) and max(mu1, mu2) < sigma[-2]
            plateau = np.count_nonzero((sigma > min(mu1, mu2)) & (sigma < max(mu1, mu2))) >= 2
            if (
                separated
                and substantial
                and inside
                and plateau
                and chi2_2 < 0.5 * (single[2] if single else np.inf)
                and chi2_red_2 <= max_chi2_red
            ):
                errs = np.sqrt(np.clip(np.diag(pcov), 0, None)) * np.sqrt(max(1.0, chi2_red_2))
                a_max2 = amin2 + 2 * (d1 + d2)
                fine = (
                    np.geomspace(max(sigma_lo, sigma_hi * 1e-15), sigma_hi, 4000)
                    if sigma_lo > 0
                    else np.linspace(0, sigma_hi, 4000)
                )
                mu_mid = threshold_crossing(fine, double_logistic(fine, *popt), (a_max2 + amin2) / 2)
                near = (
                    0
                    if abs(np.log(max(mu_mid or mu1, 1e-300) / max(mu1, 1e-300)))
                    < abs(np.log(max(mu_mid or mu2, 1e-300) / max(mu2, 1e-300)))
                    else 3
                )
                drops = [
                    {"mu": float(mu1), "mu_err": float(errs[0]), "slope": float(s1), "height": float(2 * d1)},
                    {"mu": float(mu2), "mu_err": float(errs[3]), "slope": float(s2), "height": float(2 * d2)},
                ]
                drops.sort(key=lambda d: d["mu"])
                return result("two-drops", mu_mid, float(errs[near]), None, a_max2, amin2, free, float(chi2_red_2), thr,
                              "accuracy falls to a plateau, then falls again: two stacked logistics fitted", drops)  # fmt: skip
        why = "the fit did not converge" if single is None else f"reduced χ² = {chi2_red:.3g} > {max_chi2_red:g}"
        return result("poor-fit", thr, None, None, a_top, a_min, free, None if single is None else float(chi2_red), thr,
                      f"one logistic does not describe this curve ({why}); μ is the threshold crossing")  # fmt: skip

    popt, pcov, _ = single
    mu, slope, a_max, amin_fit = popt
    mu_err = float(np.sqrt(max(pcov[0, 0], 0.0)) * np.sqrt(max(1.0, chi2_red)))
    if not (sigma_lo <= mu <= sigma_hi) or not np.isfinite(mu_err):
        return result(
            "poor-fit",
            thr,
            None,
            None,
            a_top,
            a_min,
            free,
            float(chi2_red),
            thr,
            "fitted μ is outside the σ grid; μ is the threshold crossing",
        )
    return result("ok", float(mu), mu_err, float(slope), a_max, amin_fit, free, float(chi2_red), thr)
