"""The midpoint noise level μ (paper Eq. 1–2) and an honest status for every curve.

``F(σ; μ, s) = 2 / (1 + exp((σ − μ)/s)) · δa + a_min`` with δa = (a_max − a_min)/2. As the paper
defines them (docs/method.md), a_max and a_min are the **maximally and minimally achieved
accuracy**: both are estimated from the measurements (with their errors) and held fixed, so F(μ)
is exactly half-way between what the model achieves clean and what it falls to. Only μ and the
slope s are fitted to the drop, by weighted least squares (scipy.optimize.curve_fit) with the
standard error Δy of each mean accuracy (see :func:`uncertainty`), in four shapes of the same
meaning (:data:`SHAPES`). μ's error comes from the joint covariance of every measured value —
they share samples and draws, so they are correlated (:func:`correlation`) — through the fit,
a_max and a_min together (:func:`_linearise`), scaled by √χ²_red when a shape describes the data
worse than Δy; where shapes are weighed, through that weighing too (:func:`_averaged`) (docs/method.md,
"μ's error").

A fitted μ is ``ok`` only when the data resolve it: it lies inside the measured σ range, at
least three distinct measured σ fall inside the drop, on both sides of μ, the measurements below
μ are not significantly under the midpoint nor those above it over it, and it agrees with the
measured threshold crossing within their errors. Otherwise the status says what the data do tell (docs/method.md, "Statuses").
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, brentq, curve_fit
from scipy.special import expit, ndtr, ndtri, owens_t, stdtrit

MAX_CHI2_RED = 50.0  # above this a second, two-logistic model is tried
SIGNIFICANT = 3.0  # a difference of this many standard errors is real, not sampling noise
MIN_DROP = 0.05  # a drop smaller than this fraction of (a_max − chance) is no drop
CHANCE_MARGIN = 0.02  # a bottom within this fraction of (a_max − chance) of chance is chance
PLATEAU_JOIN = 2.0  # a value this many standard errors below the plateau has left it
FLAT_TAIL = 0.1  # the last points change by less than this fraction of the drop: a plateau
MIN_INSIDE = 3  # distinct measured σ inside the drop that an `ok` μ needs (2 determine a logistic exactly)


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
    a_max_err: float | None = None
    a_min_err: float | None = None
    bracket: list[float] | None = None
    shape: str | None = None

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
    """Mean accuracy per σ and its standard error Δy when every repeat scores the same n samples.

    A sample's correctness varies between samples (how hard it is) and, for one sample, between
    noise draws. The spread of the accuracy over repeats, s², measures the second part (per
    repeat, over n samples); the binomial p(1 − p)/n is both together. So
    Δy² = (p(1 − p)/n − s²)⁺ + s²/repeats: the sample part is paid once, only the draw part
    shrinks with repeats. Repeats that are differently trained networks (s² above the binomial)
    reduce to s²/repeats. docs/method.md, "Δy"."""
    y, dy, _spread = _moments(acc, n_samples)
    return y, dy


def _moments(
    acc: np.ndarray, n_samples: int, variance: np.ndarray | None = None, one_network: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`uncertainty`'s (mean, Δy) and the spread s² over repeats it is made from;
    ``variance``: one sample's score variance per σ for fractional scores (:func:`score_variance`),
    in place of the binomial p(1 − p). ``one_network``: the repeats are noise draws on one network
    (a scan), fresh per sample, so the samples are independent given a draw and the true spread
    is at most the binomial (Σ pᵢ(1 − pᵢ)/n² ≤ p(1 − p)/n); s² is held to that bound. With few
    repeats s² is a noisy estimate (one degree of freedom with 2 repeats), and one σ whose
    repeats happened to differ would otherwise get an error several times its neighbours'."""
    acc = np.atleast_2d(np.asarray(acc, dtype=np.float64))
    reps = acc.shape[1]
    y = acc.mean(axis=1)
    binomial = binomial_se(y, n_samples) ** 2 if variance is None else variance / max(int(n_samples), 1)
    draws = acc.var(axis=1, ddof=1) if reps > 1 else np.zeros_like(y)
    if one_network:
        draws = np.minimum(draws, binomial)
    return y, np.sqrt(np.maximum(binomial - draws, 0.0) + draws / reps), draws


def score_variance(accuracy: np.ndarray, mean_squares: np.ndarray) -> np.ndarray | None:
    """The variance of one sample's score over the samples and repeats of each σ, from the mean
    score and mean squared score per (σ, repeat); None when every score is 0 or 1 (a score in
    [0, 1] has x² = x only there), whose variance is the binomial p(1 − p). A fractional score —
    a mean over pixels, positions or a plug-in's — varies far less than a 0/1 outcome of the same
    mean, so the binomial would make Δy too large by up to √(elements per sample)."""
    accuracy, mean_squares = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (accuracy, mean_squares))
    if np.array_equal(accuracy, mean_squares):
        return None
    return np.maximum(mean_squares.mean(axis=1) - accuracy.mean(axis=1) ** 2, 0.0)


def _floored(variance: np.ndarray, clean_variance: float | None) -> tuple[np.ndarray, float] | None:
    """Score variances with each 0 (every sample scored the same: a value no better known than
    its neighbours) raised to the smallest positive one; None when none is positive."""
    every = np.append(variance, [] if clean_variance is None else [clean_variance])
    positive = every[every > 0]
    if positive.size == 0:
        return None
    floor = float(positive.min())
    return np.maximum(variance, floor), max(clean_variance or 0.0, floor)


def _inside_unit(p: np.ndarray | float, n: int) -> np.ndarray:
    """Accuracies of n samples kept off 0 and 1 by 1/(n+1), where Φ⁻¹ and p(1 − p) stay finite
    (and at least 1e-12: 1 − 1/(n+1) is 1.0 in floating point for n ≳ 1e16)."""
    edge = max(1.0 / (max(int(n), 1) + 1), 1e-12)
    return np.clip(p, edge, 1.0 - edge)


def binomial_se(p: np.ndarray | float, n: int) -> np.ndarray:
    n = max(int(n), 1)
    p = _inside_unit(p, n)
    return np.sqrt(p * (1 - p) / n)


def _interp(x0: float, x1: float, y0: float, y1: float, level: float) -> float:
    """σ where the segment (x0, y0)–(x1, y1) crosses ``level``; in log σ on positive σ (the grids
    are log-spaced, and curves are closer to straight in log σ)."""
    if y0 == y1:
        return float(x1)
    t = (y0 - level) / (y0 - y1)
    if x0 > 0:
        return float(np.exp(np.log(x0) + t * (np.log(x1) - np.log(x0))))
    return float(x0 + t * (x1 - x0))


def threshold_crossing(sigma: np.ndarray, y: np.ndarray, level: float) -> float | None:
    """First σ where the curve falls below ``level``, interpolated between its neighbours."""
    below = np.flatnonzero(np.asarray(y) < level)
    if below.size == 0:
        return None
    i = int(below[0])
    if i == 0:
        return float(sigma[0])
    return _interp(sigma[i - 1], sigma[i], y[i - 1], y[i], level)


def _plateau(values: np.ndarray, errs: np.ndarray) -> int:
    """Length of the leading run of values consistent with each other.

    Grows from ``values[0]`` while the next value lies within PLATEAU_JOIN standard errors below
    the running weighted mean (values above it always join: they are achieved accuracy too).
    Negate and reverse the values for a bottom plateau."""
    w, s, used = 1 / errs[0] ** 2, values[0] / errs[0] ** 2, 1
    for yi, di in zip(values[1:], errs[1:], strict=True):
        mean, err = s / w, np.sqrt(1 / w)
        if yi < mean - PLATEAU_JOIN * np.hypot(di, err):
            break
        w, s, used = w + 1 / di**2, s + yi / di**2, used + 1
    return used


def _normal_cdf2(h: np.ndarray, k: np.ndarray, r: float) -> np.ndarray:
    """P(X < h, Y < k) for standard normals of correlation r (Owen's T, vectorised)."""
    r = float(np.clip(r, -1 + 1e-12, 1 - 1e-12))
    h = np.where(np.abs(h) < 1e-9, 1e-9, h)
    k = np.where(np.abs(k) < 1e-9, 1e-9, k)
    root = np.sqrt(1 - r * r)
    corner = np.where(h * k > 0, 0.0, 0.5)
    return 0.5 * (ndtr(h) + ndtr(k)) - owens_t(h, (k - r * h) / (h * root)) - owens_t(k, (h - r * k) / (k * root)) - corner


def shared_part(p: np.ndarray, sample_var: np.ndarray) -> float:
    """ρ², the correlation between two draws' breaking points of one sample (docs/method.md,
    "Correlated values"): the value at which the model's between-sample variance,
    Φ₂(q, q; ρ²) − p², summed over the σ values with 0.02 < p < 0.98 (1 when there are none),
    equals the measured one (binomial − spread; each σ's estimate is noisy and may be negative,
    so only the sum is held to the range [0, 1])."""
    keep = (p > 0.02) & (p < 0.98)
    if not np.any(keep):
        return 1.0
    q, target = ndtri(p[keep]), float(np.sum(sample_var[keep]))

    def excess(r2: float) -> float:
        return float(np.sum(_normal_cdf2(q, q, r2) - p[keep] ** 2)) - target

    if excess(1.0) <= 0:
        return 1.0
    if excess(0.0) >= 0:
        return 0.0
    return float(brentq(excess, 0.0, 1.0, xtol=1e-4))


def correlation(p: np.ndarray, repeats: int, r2: float, fixed: np.ndarray, shared_draws: bool = True) -> np.ndarray:
    """Correlation of accuracies measured on the same samples, with the same draws in each repeat,
    at different σ (docs/method.md, "Correlated values"). Each sample has a breaking σ per draw;
    within a repeat the accuracies are one empirical survival curve of those (covariance
    min(p) − p_a·p_b); across repeats they share only the sample, whose breaking points correlate
    with ρ² in normal scores (Φ₂(q_a, q_b; ρ²) − p_a·p_b). ``fixed`` marks the values that score
    the clean model (the clean accuracy, σ = 0): a property of the sample alone, correlating with ρ
    with each draw. ``shared_draws`` False: every σ has draws of its own (separately trained
    networks), so different σ share only the samples."""
    q = ndtri(p)
    within = np.minimum.outer(p, p) - np.outer(p, p)
    across = _normal_cdf2(q[:, None], q[None, :], r2) - np.outer(p, p)
    mean = within / repeats + (1 - 1 / repeats) * across  # of R repeats; also each σ's variance when unshared
    cov = mean if shared_draws else across
    for i in np.flatnonzero(fixed):
        cov[i, :] = cov[:, i] = np.where(fixed, within[i], _normal_cdf2(q[i], q, np.sqrt(r2)) - p[i] * p)
    np.fill_diagonal(cov, np.where(fixed, p * (1 - p), np.diag(mean)))
    sd = np.sqrt(np.diag(cov))
    return np.clip(cov / np.outer(sd, sd), -1.0, 1.0)


ONE_SD = float(ndtr(1.0))  # the share of a normal below +1 s.d. (0.841)


def _repeat_shapes(p: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The two ways a draw shared by every sample of a repeat moves its curve (columns; 0 at σ = 0,
    which scores the clean model): a probit shift of every sample's breaking point, φ(Φ⁻¹(p)), and
    a sideways shift in log σ, −∂p/∂log σ of the mean curve, which leaves the plateaus where they
    are (docs/method.md, "Weight noise")."""
    moving = sigma > 0
    sideways = np.zeros_like(p)
    if np.count_nonzero(moving) > 1:  # central differences on the grid (sorted, distinct σ)
        sideways[moving] = -np.gradient(p[moving], np.log(sigma[moving]))
    probit = np.where(moving, np.exp(-0.5 * ndtri(p) ** 2) / np.sqrt(2 * np.pi), 0.0)
    return np.stack([probit, sideways], axis=1)


def _repeat_shift(accuracy: np.ndarray, p: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The covariance between σ values of the shift a draw shared by every sample of a repeat gives
    the curve (weight noise: one programmed chip per repeat; docs/method.md, "Weight noise"). A chip
    moves the curve in a mixture of :func:`_repeat_shapes`; the repeats' deviations from the mean
    curve are projected on those shapes (an orthonormal basis of their span, so that shapes that
    nearly coincide count once), the coefficients' covariance over repeats less what the samples'
    own draws put into them — the variance per value the shapes leave, in every direction — is
    held positive semi-definite, and mapped back to σ."""
    shapes = _repeat_shapes(p, sigma)
    basis, strength, _ = np.linalg.svd(shapes, full_matrices=False)
    if strength[0] <= 0:
        return np.zeros((len(p), len(p)))
    basis = basis[:, strength > 1e-6 * strength[0]]
    dev = accuracy - accuracy.mean(axis=1, keepdims=True)
    coef = basis.T @ dev  # each repeat's shift along each direction
    rest = dev - basis @ coef
    repeats, k = accuracy.shape[1], basis.shape[1]
    rows = int(np.count_nonzero(sigma > 0))  # σ = 0 rows score the clean model: no residual there
    noise = float(np.sum(rest**2)) / max((rows - k) * (repeats - 1), 1)  # per-value variance the shapes leave
    values, vectors = np.linalg.eigh(np.atleast_2d(np.cov(coef)) - noise * np.eye(k))
    inner = (vectors * np.maximum(values, 0.0)) @ vectors.T
    return basis @ inner @ basis.T


@dataclass
class _Measured:
    """A curve's measurements as one vector — the clean accuracy (σ = 0, when measured) then the
    mean accuracy per σ — with their joint covariance, so that every estimate that is a function
    of them (a_max, a_min, μ) gets its error from the same matrix."""

    sigma: np.ndarray
    y: np.ndarray
    dy: np.ndarray
    values: np.ndarray
    errs: np.ndarray
    cov: np.ndarray
    offset: int  # 1 when values[0] is the clean accuracy

    @classmethod
    def build(cls, sigma: np.ndarray, accuracy: np.ndarray, clean: float | None, n: int, shared_draws: bool = True,
              variance: np.ndarray | None = None, clean_variance: float | None = None,
              repeat_shift: bool = False) -> _Measured:  # fmt: skip
        """``variance`` (and ``clean_variance``): one sample's score variance per σ (and clean) for
        fractional scores; the covariance keeps the 0/1 model's correlations, with the share of
        each value's variance that lies between samples measured on the scores. ``repeat_shift``:
        each repeat is one draw shared by every sample, which moves the whole curve (weight noise:
        :func:`_repeat_shift`); its part of the spread is not held to the binomial."""
        floored = None if variance is None else _floored(variance, clean_variance)
        var, clean_var = floored if floored is not None else (None, None)
        y, dy, spread = _moments(accuracy, n, var, one_network=shared_draws and not repeat_shift)
        repeats = accuracy.shape[1]
        head = [] if clean is None else [clean]
        values = np.concatenate([head, y]).astype(np.float64)
        p = _inside_unit(values, n)
        py = p[len(head) :]
        shift = np.zeros((len(y), len(y)))  # the covariance of one repeat's shift between σ values
        if repeat_shift and repeats > 1:  # one draw per repeat, shared by every sample: a shift of the whole curve
            shift = _repeat_shift(accuracy, py, sigma)
            single = binomial_se(y, n) ** 2 if var is None else var / max(int(n), 1)
            spread = np.minimum(np.maximum(spread - np.diag(shift), 0.0), single)  # what is left: the samples' own draws
            # the shift's covariance rests on R − 1 degrees of freedom: widened by Student's t (its 84th percentile)
            shift = shift * float(stdtrit(repeats - 1, ONE_SD)) ** 2
            dy = np.sqrt(np.maximum(single - spread, 0.0) + (spread + np.diag(shift)) / repeats)
        between = py * (1 - py) - n * spread if var is None else py * (1 - py) * (1 - n * spread / var)
        r2 = shared_part(py, between) if repeats > 1 else 1.0
        clean_err = [] if clean is None else [float(binomial_se(clean, n) if var is None else np.sqrt(clean_var / n))]
        errs = np.concatenate([clean_err, dy])
        own = np.sqrt(np.maximum(dy**2 - np.diag(shift) / repeats, 0.0))  # the part of Δy that correlates as a survival curve
        fixed = np.concatenate([head, sigma == 0]).astype(bool)  # σ = 0 scores the clean model in every repeat
        corr = correlation(p, repeats, r2, fixed, shared_draws)
        base = np.concatenate([errs[: len(head)], own])
        cov = corr * np.outer(base, base)
        cov[len(head) :, len(head) :] += shift / repeats
        return cls(sigma, y, dy, values, errs, cov, len(head))

    def level(self, weights: np.ndarray) -> tuple[float, float]:
        """A weighted mean of the values and its standard error (weights sum to 1)."""
        return float(weights @ self.values), self.error(weights)

    def error(self, gradient: np.ndarray) -> float:
        """Standard error of an estimate that moves with the values by ``gradient`` (a sandwich)."""
        return float(np.sqrt(max(gradient @ self.cov @ gradient, 0.0)))

    def apart(self, weights: np.ndarray) -> np.ndarray:
        """Standard error of each y minus the level ``weights``·values: they share samples, so
        the difference varies less than either would independently."""
        var = self.dy**2 + weights @ self.cov @ weights - 2 * (self.cov @ weights)[self.offset :]
        return np.sqrt(np.maximum(var, 0.0))

    def mean_of(self, index: np.ndarray) -> np.ndarray:
        """Inverse-variance weights over the values at ``index`` (into ``values``)."""
        w = np.zeros(len(self.values))
        w[index] = 1 / self.errs[index] ** 2
        return w / w.sum()


LN2 = float(np.log(2.0))
# The fraction of the drop still to come, u(z) with z = (x − μ)/s: 1 before the drop, 0 after it,
# u(0) = 1/2, so every shape passes the midpoint at μ. ``linear`` is Eq. 1 in σ; the others are in
# log σ, where real curves are closer to straight: a logistic (symmetric), a Fréchet survival
# (a fast start and a long tail towards chance, the common shape of measured curves) and its
# mirror, a Weibull (a slow start). docs/method.md, "Shapes", says why and what each costs.
_UNIT = {
    "linear": lambda z: expit(-z),
    "log": lambda z: expit(-z),
    "frechet": lambda z: -np.expm1(-LN2 * np.exp(-np.clip(z, -50, 50))),
    "weibull": lambda z: np.exp(-LN2 * np.exp(np.clip(z, -50, 50))),
}
SHAPES = tuple(_UNIT)


def _x(sigma: np.ndarray, shape: str) -> np.ndarray:
    if shape == "linear":
        return sigma
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(sigma, 0.0))


def shaped_curve(sigma: np.ndarray, mu: float, slope: float, a_max: float, a_min: float, shape: str) -> np.ndarray:
    """The fitted curve: a_min + (a_max − a_min)·u((x − x_μ)/s) with x = σ or log σ by ``shape``."""
    z = (_x(np.asarray(sigma, dtype=np.float64), shape) - _x(np.float64(mu), shape)) / slope
    return a_min + (a_max - a_min) * _UNIT[shape](z)


def _fit_mu(sigma, y, dy, a_max, a_min, mu0, shape):
    """Weighted least-squares (μ, s) in one shape with the plateaus held: (μ, s, χ²) or None; in
    the log-σ shapes μ is fitted as log μ. Starts from a few slopes."""
    pos = sigma[sigma > 0]
    if shape != "linear":
        keep = sigma > 0
        x, y, dy = np.log(sigma[keep]), y[keep], dy[keep]
        lo, hi, m0, width = float(x.min()), float(x.max()), float(np.log(max(mu0, pos.min()))), float(x.max() - x.min())
    else:
        x, lo, hi, m0, width = sigma, float(sigma.min()), float(sigma.max()), mu0, max(mu0, float(pos.min()))
    if len(x) < 3:
        return None
    tiny = 1e-6 * (width if shape != "linear" else float(pos.min()))
    span = max(hi - lo, tiny * 10)
    unit = _UNIT[shape]

    def f(v, mu, slope):  # |s|: Levenberg–Marquardt (MINPACK, fast) has no bounds; μ's range is checked after
        return a_min + (a_max - a_min) * unit((v - mu) / (abs(slope) + tiny))

    best = None
    for s0 in (width * 0.03, width * 0.3):
        p0 = [float(np.clip(m0, lo, hi)), float(np.clip(s0, tiny * 10, span))]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(f, x, y, p0=p0, sigma=dy, absolute_sigma=True, method="lm", maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        chi2 = float(np.sum(((f(x, *popt) - y) / dy) ** 2))
        if np.all(np.isfinite(pcov)) and (best is None or chi2 < best[2]):
            best = (float(popt[0]), abs(float(popt[1])) + tiny, chi2)
    if best is None or shape == "linear":
        return best
    with np.errstate(over="ignore"):  # a diverged fit: μ = inf, refused as outside the σ range
        return float(np.exp(best[0])), best[1], best[2]


@dataclass
class _Linearised:
    """One fitted shape to first order in the values δ: μ + ``mu``·δ, and its residuals over the
    drop (the σ > 0 of the window, where every shape is fitted) ``residual`` + ``moves``·δ."""

    mu: np.ndarray
    rows: np.ndarray
    residual: np.ndarray
    moves: np.ndarray

    def chi2(self, data: _Measured, delta: np.ndarray | None = None) -> np.ndarray:
        """The residuals' χ² with the values' covariance, r·C⁻¹·r (for each column of ``delta``):
        the correlated values' log-likelihood, which is what compares shapes (their residuals are
        smooth where the errors are correlated, so the per-value χ² misjudges them). A 10⁻³ ridge
        keeps C invertible where neighbouring σ correlate almost fully."""
        r = self.residual[:, None] if delta is None else self.residual[:, None] + self.moves @ delta
        cov = data.cov[np.ix_(data.offset + self.rows, data.offset + self.rows)]
        solved = np.linalg.solve(cov + np.eye(len(self.rows)) * 1e-3 * np.mean(np.diag(cov)), r)
        return np.sum(r * solved, axis=0)


def _linearise(data: _Measured, window: slice, shape: str, mu: float, slope: float, a_max: float, a_min: float,
               top: np.ndarray, bottom: np.ndarray) -> _Linearised | None:  # fmt: skip
    """How a least-squares fit of ``shape`` moves with every value (None when it is degenerate):
    with each value in the window directly and with those that make up a_max (weights ``top``)
    and a_min (``bottom``) through the plateaus it is fitted between. μ's standard error is then
    the sandwich √(g·C·g) with the values' joint covariance C: they share samples and draws, so
    these moves are correlated (:func:`correlation`) and neither independent errors per σ nor
    plateau errors added on top describe them (docs/method.md)."""
    idx = np.arange(len(data.y))[window]
    if shape != "linear":
        idx = idx[data.sigma[idx] > 0]
    z = (_x(data.sigma[idx], shape) - _x(np.float64(mu), shape)) / slope
    unit, h = _UNIT[shape], 1e-6
    du = (unit(z + h) - unit(z - h)) / (2 * h)
    jac = -(a_max - a_min) / slope * np.stack([du, du * z], axis=1)  # ∂F/∂μ (or ∂F/∂log μ), ∂F/∂s
    weights = 1 / data.dy[idx] ** 2
    try:
        sens = np.linalg.solve(jac.T @ (weights[:, None] * jac), jac.T * weights)  # ∂(μ, s)/∂y in the window
    except np.linalg.LinAlgError:
        return None
    u = unit(z)
    grad = -np.outer(sens @ u, top) - np.outer(sens @ (1 - u), bottom)
    grad[:, data.offset + idx] += sens
    keep = data.sigma[idx] > 0
    rows = idx[keep]
    residual = data.y[rows] - (a_min + (a_max - a_min) * u[keep])
    moves = -jac[keep] @ grad - np.outer(u[keep], top) - np.outer(1 - u[keep], bottom)
    moves[np.arange(len(rows)), data.offset + rows] += 1.0
    return _Linearised(grad[0] if shape == "linear" else grad[0] * mu, rows, residual, moves)  # log μ: delta method


def _fit_double(sigma, y, dy, a_min_fixed: float | None):
    """Two stacked logistics, from starts spread over the grid; (params, cov, chi2) or None."""
    n = len(sigma)
    lo_mu, hi_mu = float(sigma.min()), float(sigma.max())
    tiny = max(hi_mu * 1e-12, 1e-15)
    best = None
    starts = sorted({int(i) for i in np.linspace(1, n - 2, 6)})
    amin0 = y[-1] if a_min_fixed is None else a_min_fixed
    for a, b in ((a, b) for a in starts for b in starts if b > a):
        m1, m2 = sigma[a], sigma[b]
        mid = y[(a + b) // 2]
        p0 = [m1, max(m1 * 0.2, tiny * 10), max((y[0] - mid) / 2, 1e-3), m2, max(m2 * 0.2, tiny * 10),
              max((mid - amin0) / 2, 1e-3), amin0]  # fmt: skip
        free = a_min_fixed is None
        lower = [lo_mu, tiny, 0.0, lo_mu, tiny, 0.0, 0.0 if free else amin0 - 1e-9]
        upper = [hi_mu, hi_mu, 1.0, hi_mu, hi_mu, 1.0, 1.0 if free else amin0 + 1e-9]
        p0 = np.clip(p0, lower, upper)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(double_logistic, sigma, y, p0=p0, sigma=dy, absolute_sigma=True,
                                       bounds=(lower, upper), max_nfev=4000)  # fmt: skip
        except (RuntimeError, ValueError):
            continue
        chi2 = float(np.sum(((double_logistic(sigma, *popt) - y) / dy) ** 2))
        if best is None or chi2 < best[2]:
            best = (popt, pcov, chi2)
    return best


def _two_drops(sigma, y, dy, a_max, a_min, a_min_free, single_chi2) -> FitResult | None:
    """The paper's Fig. 8 shape: a fall to a plateau, then a second fall (both inside the grid,
    with measured σ on the plateau between them), or None when that does not describe the curve.
    μ is where the fitted sum crosses half-way between the achieved ``a_max`` and its bottom."""
    if len(sigma) < 9:
        return None
    double = _fit_double(sigma, y, dy, None if a_min_free else a_min)
    if double is None:
        return None
    popt, pcov, chi2_2 = double
    chi2_red_2 = chi2_2 / max(len(sigma) - 7, 1)
    mu1, s1, d1, mu2, s2, d2, amin2 = popt
    separated = min(mu1, mu2) > 0 and max(mu1, mu2) / min(mu1, mu2) >= 3
    substantial = min(d1, d2) >= 0.15 * (d1 + d2)
    inside = sigma[1] < min(mu1, mu2) and max(mu1, mu2) < sigma[-2]
    plateau = np.count_nonzero((sigma > min(mu1, mu2)) & (sigma < max(mu1, mu2))) >= 2
    if not (separated and substantial and inside and plateau and chi2_2 < 0.5 * single_chi2 and chi2_red_2 <= MAX_CHI2_RED):
        return None
    errs = np.sqrt(np.clip(np.diag(pcov), 0, None)) * np.sqrt(max(1.0, chi2_red_2))
    fine = np.geomspace(sigma[sigma > 0].min(), sigma[-1], 4000)
    mu_mid = threshold_crossing(fine, double_logistic(fine, *popt), (a_max + amin2) / 2)
    near = 0 if mu_mid is None or abs(np.log(mu_mid / mu1)) < abs(np.log(mu_mid / mu2)) else 3
    drops = sorted(
        [
            {"mu": float(mu1), "mu_err": float(errs[0]), "slope": float(s1), "height": float(2 * d1)},
            {"mu": float(mu2), "mu_err": float(errs[3]), "slope": float(s2), "height": float(2 * d2)},
        ],
        key=lambda d: d["mu"],
    )
    return FitResult("two-drops", mu_mid, float(errs[near]), None, float(a_max), float(amin2), a_min_free,
                     float(chi2_red_2), None, "accuracy falls to a plateau, then falls again: two stacked logistics fitted",
                     drops)  # fmt: skip


def fit_curve(
    sigmas, accuracy, chance: float, n_samples: int, clean: float | None = None, max_chi2_red: float = MAX_CHI2_RED,
    shared_draws: bool = True, variance: np.ndarray | None = None, clean_variance: float | None = None,
    repeat_shift: bool = False,
) -> FitResult:
    """Fit one accuracy-vs-σ curve (``accuracy``: σ × repeats, NaN/Inf outputs already counted as
    wrong predictions) and classify it. ``clean`` is the accuracy without noise (σ = 0), measured
    on the same ``n_samples`` samples; it anchors a_max. ``shared_draws``: each repeat scored every
    σ with the same draws scaled (a scan's common random numbers); False when every σ drew its own
    (separately trained or evaluated networks) — it sets how the values correlate. ``variance``
    (per σ) and ``clean_variance``: one sample's score variance where scores are fractional
    (:func:`score_variance`); None: 0/1 scores, the binomial p(1 − p).
    ``repeat_shift``: each repeat is one draw shared by every sample (weight noise), which moves
    the whole curve.

    a_max is estimated twice: first as the leading run of mutually consistent values, then — once
    a logistic is fitted — from the values where that logistic is still flat, so that a curve's
    slow start does not leak into its plateau (docs/method.md, "a_max")."""
    sigma = np.asarray(sigmas, dtype=np.float64)
    accuracy = np.asarray(accuracy, dtype=np.float64).reshape(len(sigma), -1)
    order = np.argsort(sigma, kind="stable")
    sigma, accuracy = sigma[order], accuracy[order]
    if not np.all(np.isfinite(accuracy)) or (clean is not None and not np.isfinite(clean)):
        raise ValueError("accuracies must be finite (NaN outputs are wrong predictions, counted as such)")
    if variance is not None:
        variance = np.asarray(variance, dtype=np.float64)[order]
    data = _Measured.build(sigma, accuracy, clean, n_samples, shared_draws, variance, clean_variance, repeat_shift)
    dy = data.dy
    leading = data.mean_of(np.arange(_plateau(data.values, data.errs)))
    first = _classify(data, chance, leading, max_chi2_red, bootstrap=False)  # its μ places the plateau
    if first.status != "ok":
        return first
    flat = shaped_curve(sigma, first.mu, first.slope, first.a_max, first.a_min, first.shape) >= first.a_max - 0.25 * dy
    if not np.any(flat) and clean is None:
        return _classify(data, chance, leading, max_chi2_red)
    top = np.concatenate([np.arange(data.offset), data.offset + np.flatnonzero(flat)])
    return _classify(data, chance, data.mean_of(top), max_chi2_red)


def _classify(data: _Measured, chance: float, top: np.ndarray, max_chi2_red: float, bootstrap: bool = True) -> FitResult:
    """The status and μ of a curve whose top plateau (a_max) is the mean of the values weighted
    by ``top``; ``bootstrap`` False skips the costly part of an `ok` μ's error (:func:`_averaged`)."""
    sigma, y, dy = data.sigma, data.y, data.dy
    a_max, a_max_err = data.level(top)
    sigma_lo, sigma_hi = float(sigma[0]), float(sigma[-1])
    span = max(a_max - chance, 1e-9)

    def result(status, mu, err=None, **kw) -> FitResult:
        base = {"slope": None, "a_max": a_max, "a_min": chance, "a_min_free": False, "chi2_red": None,
                "mu_threshold": None, "a_max_err": a_max_err}  # fmt: skip
        return FitResult(status, None if mu is None else float(mu), None if err is None else float(err), **{**base, **kw})

    # a_min: chance, unless the curve ends on a plateau clearly above it (then that plateau)
    # the tail: the last decade of σ (at least 3 values) must be flat, not merely the last steps of a fine grid
    k = max(3, int(np.count_nonzero(sigma >= sigma_hi / 10))) if sigma_hi > 0 else 3
    k = min(k, len(y))
    lowest = float(y.min())
    tail = y[-k:]
    tail_drop = max(a_max - float(tail.mean()), 1e-12)
    flat = float(tail.max() - tail.min()) <= max(SIGNIFICANT * float(dy[-k:].max()), FLAT_TAIL * tail_drop)
    above = lowest - chance > max(SIGNIFICANT * float(dy[int(np.argmin(y))]), CHANCE_MARGIN * span)
    a_min_free = bool(above and flat)
    bottom = np.zeros(len(data.values))
    if a_min_free:  # the bottom run, from the end
        bottom = data.mean_of(data.offset + np.arange(len(y) - _plateau(-y[::-1], dy[::-1]), len(y)))
        a_min, a_min_err = data.level(bottom)
    else:
        a_min, a_min_err = chance, 0.0
    fixed = {"a_min": a_min, "a_min_free": a_min_free, "a_min_err": a_min_err}

    drop = a_max - min(lowest, a_min) if a_min_free else a_max - lowest
    if drop <= max(SIGNIFICANT * float(data.apart(top)[int(np.argmin(y))]), MIN_DROP * span):
        return result("not-reached", sigma_hi, **fixed, bracket=[sigma_hi, None],
                      note=f"accuracy never fell significantly up to σ = {sigma_hi:g}: μ > {sigma_hi:g}")  # fmt: skip
    half = (a_max + a_min) / 2
    below = np.flatnonzero(y < half)
    if below.size == 0:
        return result("not-reached", sigma_hi, **fixed, bracket=[sigma_hi, None],
                      note=f"accuracy never fell to the midpoint {half:.3g} up to σ = {sigma_hi:g}: μ > {sigma_hi:g}")  # fmt: skip
    i = int(below[0])
    if i == 0:
        return result("no-drop-from-start", sigma_lo, **fixed, mu_threshold=sigma_lo, bracket=[0.0, sigma_lo],
                      note=f"accuracy is already below the midpoint at the smallest σ ({sigma_lo:g}): μ ≤ {sigma_lo:g}")  # fmt: skip
    thr = _interp(sigma[i - 1], sigma[i], y[i - 1], y[i], half)
    bracket = [float(sigma[i - 1]), float(sigma[i])]
    thr_err = _crossing_error(sigma, y, dy, i, half, a_max_err, a_min_err)
    # measured σ inside the drop: significantly below a_max and above a_min
    # (the difference from a plateau is judged with their covariance; the plateaus' own values are never inside)
    plateaus = (top + bottom)[data.offset :] > 0
    inside = (y < a_max - SIGNIFICANT * data.apart(top)) & (y > a_min + SIGNIFICANT * data.apart(bottom)) & ~plateaus
    fixed["mu_threshold"] = thr

    if np.unique(sigma[inside]).size < MIN_INSIDE:
        lo, hi = bracket
        return result("bracketed", thr, max(thr - lo, hi - thr, thr_err), **fixed, bracket=bracket,
                      note=f"the drop is measured at fewer than {MIN_INSIDE} σ: μ lies between σ = {lo:.3g} and {hi:.3g}; "
                           "a finer grid there resolves it")  # fmt: skip
    # The shapes are fitted to the drop (the σ inside it and one neighbour each side): the plateaus
    # are held, and tails far from μ would otherwise pull a shape that does not match them exactly.
    where = np.flatnonzero(inside)
    window = slice(max(int(where[0]) - 1, 0), int(where[-1]) + 2)
    ws, wy, wdy = sigma[window], y[window], dy[window]
    fits = {shape: fit for shape in SHAPES if (fit := _fit_mu(ws, wy, wdy, a_max, a_min, thr, shape)) is not None}
    ranked = sorted(fits, key=lambda k: fits[k][2])
    dof = max(len(ws) - 2, 1)
    best_chi2 = fits[ranked[0]][2] if ranked else np.inf
    unresolved = max(thr - bracket[0], bracket[1] - thr, thr_err)  # an unresolved μ's error spans its bracket
    if best_chi2 / dof > max_chi2_red:
        two = _two_drops(sigma, y, dy, a_max, a_min, a_min_free, best_chi2 * (len(sigma) - 2) / dof)
        if two is not None:
            problem = _inconsistency(sigma, y, dy, two.mu, (two.a_max + two.a_min) / 2, thr, thr_err, two.mu_err,
                                     sigma_lo, sigma_hi)  # fmt: skip
            if not problem:
                two.mu_threshold, two.a_max_err, two.a_min_err = thr, a_max_err, a_min_err
                return two
    if not ranked:
        return result("poor-fit", thr, unresolved, **fixed, bracket=bracket,
                      note="the logistic fit did not converge; μ is the threshold crossing")  # fmt: skip
    # Every shape whose μ the measurements do not contradict, averaged with (quasi-)Akaike weights
    # (all shapes have two parameters: exp(−Δχ²/2ĉ) with the covariance χ² of _Linearised.chi2, ĉ = its
    # best reduced value ≥ 1); μ's error follows the weighing, and the spread between shapes beyond
    # sampling joins it, so choosing a shape is not mistaken for knowing it (docs/method.md, "Shapes").
    accepted, problems = [], []
    for shape in ranked:
        mu, slope, chi2_fit = fits[shape]
        chi2_red = chi2_fit / dof
        inside_range = sigma_lo < mu < sigma_hi  # (a diverged shape: refused below, no error to compute)
        lin = _linearise(data, window, shape, mu, slope, a_max, a_min, top, bottom) if inside_range else None
        if lin is not None:
            lin.mu = lin.mu * np.sqrt(max(1.0, chi2_red))
        mu_err = np.inf if lin is None else data.error(lin.mu)
        problem = _inconsistency(sigma, y, dy, mu, half, thr, thr_err, mu_err, sigma_lo, sigma_hi)
        before, after = sigma[inside & (y >= half)], sigma[inside & (y < half)]
        if not problem and not (np.any(before < mu) and np.any(after > mu)):
            problem = "the drop is not measured on both sides of μ"
        if not problem and mu_err <= unresolved:
            accepted.append((shape, mu, lin, slope, float(lin.chi2(data)[0])))
        else:
            problems.append(f"{shape}: {problem or f'μ ± {mu_err:.2g} says less than the grid bracket'}")
    if accepted:
        chi2s = np.array([a[4] for a in accepted])
        overdispersion = max(1.0, chi2s.min() / dof)  # quasi-AIC: χ² differences shrink with the scatter
        w = _akaike(chi2s[:, None], overdispersion)[:, 0]
        mu, mu_err = _averaged(data, w, np.array([a[1] for a in accepted]), [a[2] for a in accepted], overdispersion,
                               bootstrap)
        shape, _, _, slope, _ = accepted[int(np.argmax(w))]
        chi2_fit = fits[shape][2]
        return result("ok", mu, mu_err, slope=slope, shape=shape, **fixed, chi2_red=chi2_fit / dof)
    if all("grid bracket" in p or "both sides" in p for p in problems):
        lo, hi = bracket
        return result("bracketed", thr, unresolved, **fixed, bracket=bracket, chi2_red=best_chi2 / dof,
                      note=f"the fitted μ is less precise than the grid: μ lies between σ = {lo:.3g} and {hi:.3g}")  # fmt: skip
    return result("poor-fit", thr, unresolved, **fixed, bracket=bracket, chi2_red=best_chi2 / dof,
                  note=f"no logistic shape agrees with the measurements ({problems[0]}); μ is the threshold crossing")  # fmt: skip


def _akaike(chi2s: np.ndarray, overdispersion: float) -> np.ndarray:
    """(Quasi-)Akaike weights of shapes (rows) with two parameters each, for each column."""
    w = np.exp(-(chi2s - chi2s.min(axis=0)) / (2 * overdispersion))
    return w / w.sum(axis=0)


BOOTSTRAP = 1000  # draws of the values for μ's error when shapes are weighed (the error to about ±2 %)


def _averaged(data: _Measured, w: np.ndarray, mus: np.ndarray, shapes: list[_Linearised], overdispersion: float,
              bootstrap: bool = True) -> tuple[float, float]:  # fmt: skip
    """The shapes' weighted μ and its error. Weighing shapes by how well they fit is part of the
    estimate: on the same values the best-fitting shape's μ scatters less than any single shape's
    (a shape whose μ a noise pattern pulls away also fits that pattern worse), so neither one
    shape's sandwich error nor Burnham & Anderson's sum of errors and spread (Eq. 4.9; both made
    the ±1 s.d. interval cover 78 % in one calibration setting) describes it. Its error comes from
    a linearised parametric bootstrap: values δ ~ N(0, C), each shape's μ and χ² moved to first
    order, weighed again, the spread of the weighted μ — no refits, a fixed seed so a curve's
    error is reproducible. The shapes' spread beyond what that sampling makes them scatter joins
    it: disagreement the data cannot explain is the uncertainty of not knowing the shape
    (docs/method.md, "Shapes"). ``w``: the shapes' weights on the measured values; ``bootstrap``
    False: the sandwich of the weighted gradient (and no spread), for a pass whose error is not
    reported."""
    mu = float(w @ mus)
    if w.max() > 1 - 1e-6:  # one shape carries it: its sandwich, no sampling noise of the draws
        return mu, data.error(shapes[int(np.argmax(w))].mu)
    if not bootstrap:
        return mu, data.error(w @ np.array([lin.mu for lin in shapes]))
    values, vectors = np.linalg.eigh(data.cov)
    delta = (vectors * np.sqrt(np.maximum(values, 0.0))) @ np.random.default_rng(0).standard_normal((len(values), BOOTSTRAP))
    draws = _akaike(np.array([lin.chi2(data, delta) for lin in shapes]), overdispersion)
    moves = np.array([lin.mu @ delta for lin in shapes])  # how sampling alone moves each shape's μ
    sampling = float(np.std(np.sum(draws * (mus[:, None] + moves), axis=0)))
    scatter = float(np.mean(np.sum(draws * (moves - np.sum(draws * moves, axis=0)) ** 2, axis=0)))
    excess = max(float(w @ (mus - mu) ** 2) - scatter, 0.0)
    return mu, float(np.sqrt(sampling**2 + excess))


def _crossing_error(sigma, y, dy, i, half, a_max_err, a_min_err) -> float:
    """Standard error of the interpolated crossing: Δy of the two neighbours and of the midpoint
    level, carried through the local slope of the segment. Where that exceeds the segment, the
    level lies within the errors of more than one segment: half the σ range over which the curve
    is within one error of the level (and at least the segment)."""
    x0, x1, y0, y1 = sigma[i - 1], sigma[i], y[i - 1], y[i]
    level_err = 0.5 * np.hypot(a_max_err, a_min_err)
    dy_seg = np.hypot(np.hypot(dy[i - 1], dy[i]) / np.sqrt(2), level_err)
    linear = abs(dy_seg * (x1 - x0) / (y0 - y1)) if y0 != y1 else np.inf
    if linear <= x1 - x0:
        return float(linear)
    near = np.flatnonzero(np.abs(y - half) <= np.hypot(dy, level_err))
    lo = max(min(int(near.min()) if near.size else i - 1, i - 1) - 1, 0)
    hi = min(max(int(near.max()) if near.size else i, i) + 1, len(sigma) - 1)
    return float(max(sigma[hi] - sigma[lo], 2 * (x1 - x0)) / 2)


def _inconsistency(sigma, y, dy, mu, half, thr, thr_err, mu_err, lo, hi) -> str:
    """Why a fitted μ contradicts the measurements, or ''."""
    if not lo < mu < hi or not np.isfinite(mu_err):
        return f"fitted μ = {mu:.3g} lies outside the measured σ range [{lo:g}, {hi:g}]"
    early = (sigma < mu) & (half - y > SIGNIFICANT * dy)
    if np.any(early):
        s = float(sigma[early][0])
        return f"accuracy at σ = {s:g} is already significantly below the midpoint, yet μ = {mu:.3g}"
    late = (sigma > mu) & (y - half > SIGNIFICANT * dy)
    if np.any(late):
        s = float(sigma[late][-1])
        return f"accuracy at σ = {s:g} is still significantly above the midpoint, yet μ = {mu:.3g}"
    if abs(mu - thr) > SIGNIFICANT * np.hypot(mu_err, thr_err):
        return f"fitted μ = {mu:.3g} and the threshold crossing {thr:.3g} disagree beyond their errors"
    return ""


FIT_KEYS = ("slope", "shape", "a_min_free", "a_max_err", "a_min_err", "chi2_red", "mu_threshold", "bracket", "note", "drops")


def curve_json(
    sigmas: np.ndarray, accuracy: np.ndarray, nonfinite: np.ndarray, chance: float, n_samples: int, clean: float | None,
    shared_draws: bool = True, mean_squares: np.ndarray | None = None, clean_variance: float | None = None,
    repeat_shift: bool = False, variance: np.ndarray | None = None,
) -> dict:  # fmt: skip
    """One curve in the report's keys (docs/report-schema.md): the measurements and their fit.
    Predictions whose outputs were NaN/Inf are wrong predictions and stay in the fit.
    ``mean_squares``: the mean squared score per (σ, repeat), for :func:`score_variance`; or the
    per-σ ``variance`` itself (a stored curve's ``score_variance``, refitted)."""
    if variance is None and mean_squares is not None:
        variance = score_variance(accuracy, mean_squares)
    fit = fit_curve(sigmas, accuracy, chance, n_samples, clean=clean, shared_draws=shared_draws, variance=variance,
                    clean_variance=clean_variance, repeat_shift=repeat_shift).to_json()  # fmt: skip
    out = {
        "sigmas": [float(s) for s in sigmas],
        "accuracy": [[float(a) for a in row] for row in np.atleast_2d(accuracy)],
        "nonfinite": [[int(v) for v in row] for row in np.atleast_2d(nonfinite)],
        **{k: fit[k] for k in ("mu", "mu_err", "a_max", "a_min", "status")},
        "fit": {k: fit[k] for k in FIT_KEYS},
    }
    if variance is not None:  # fractional scores: what the fit's errors came from, kept for refits
        out["score_variance"] = [float(v) for v in variance]
    if int(np.sum(nonfinite)):
        note = f"{int(np.sum(nonfinite))} predictions had NaN/Inf outputs: counted as wrong, kept in the fit."
        out["fit"]["note"] = "; ".join(n for n in (out["fit"]["note"].rstrip(". "), note) if n)
    return out


RESOLVED = ("ok", "two-drops")  # μ is a fitted value with a meaningful error


def pessimistic(curve: dict) -> float | None:
    """The smallest μ a report curve's measurements allow: the value itself when resolved (and the
    bound of `not-reached`), the low end of the bracket when the grid only brackets it, None when
    nothing is known (`failed`, `no-drop-from-start`). Used by check and plan (README, "Statuses")."""
    status = curve.get("status")
    value = curve.get("mu") if curve.get("mu") is not None else (curve.get("fit") or {}).get("mu_threshold")
    if status in RESOLVED or status == "not-reached":
        return value
    if status in ("bracketed", "poor-fit"):
        bracket = (curve.get("fit") or {}).get("bracket")
        return bracket[0] if bracket and bracket[0] is not None else value
    return None


def fell(curve: dict, chance: float | None) -> bool:
    """Whether a report curve's mean accuracy fell by more than MIN_DROP of a_max − chance (the
    report's chance level) somewhere: a `not-reached` curve that fell is no evidence of
    robustness, its μ only a lower bound at the grid's end (plan plans it there; README,
    "Statuses"). Measured against chance, not the curve's a_min, which on a flat curve is a plateau
    next to a_max where any wiggle would count as a fall; ``chance`` None (a report without it):
    against a_min."""
    rows = curve.get("accuracy") or []
    if not rows or curve.get("a_max") is None or curve.get("a_min") is None:
        return False
    floor = curve["a_min"] if chance is None else chance
    lowest = min(float(np.mean(row)) for row in rows if len(row))
    return curve["a_max"] - lowest > MIN_DROP * max(curve["a_max"] - floor, 1e-9)
