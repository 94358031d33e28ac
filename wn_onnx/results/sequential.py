"""The sequential estimator of μ: few per-sample trials, placed where they tell most about μ.

The grid measures every σ on every sample. μ is a property of the drop, so most of that work
says nothing about it. Here (docs/method.md, "Sequential estimator"), as in psychophysics'
adaptive threshold methods (the Psi method, Kontsevich & Tyler 1999; its marginal form, Prins
2013), every trial is one sample at one σ under one noise draw, correct or not; its probability
is the curve itself, p(σ) = a_min + (a_max − a_min)·u((x − x_μ)/s) in the shapes of
:mod:`wn_onnx.results.fit`. A posterior over (shape, log μ, s) on a grid — flat priors, so it is the
normalised likelihood of the outcomes in the drop and its peak the maximum-likelihood fit — is
updated after every batch; the next batch goes to the σ in the drop's core whose outcome is
expected to leave the least entropy in the posterior of μ (slope and shape are nuisances). It
stops once μ's error (posterior s.d., scaled by the overdispersion of the outcomes about the
fit, and combined with what a measured a_min's error does to μ) is at most ``tolerance``·μ.

a_max is the clean accuracy of the samples (σ = 0 needs no noisy evaluation); a_min is chance,
or the accuracy measured at the largest σ when that lies clearly above chance. Two probes, at
the ends of the σ range, give the statuses that bound μ (``not-reached``,
``no-drop-from-start``) as the grid fit does. A lapse rate of LAPSE on both ends keeps a single
surprising outcome from ruling a curve out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import chdtrc, stdtrit, xlogy  # chdtrc = chi2.sf without importing scipy.stats (0.6 s)

from wn_onnx.results.fit import (
    _UNIT,
    CHANCE_MARGIN,
    FIT_KEYS,
    FLAT_TAIL,
    MIN_DROP,
    ONE_SD,
    SHAPES,
    SIGNIFICANT,
    binomial_se,
)

LAPSE = 1e-3  # outcomes against the curve at this rate on both ends (psychophysics' lapses)
M_POINTS = 61  # grid of log μ (zoomed onto the posterior as it narrows)
SLOPES = np.geomspace(0.02, 4.0, 16)  # s: the drop's width in log σ (a factor e^s around μ)
LINEAR_MAX_SLOPE = 0.3  # the shape linear in σ: s/μ above this would not start at a_max at σ = 0
CANDIDATES = 49  # σ values spread over the range that the next batch may go to, besides the zoomed grid
ZOOM = 6.0  # the zoomed grid spans the posterior mean ± ZOOM standard deviations
CORE = 0.15  # trials go where the curve is expected between 15 % and 85 % of the way down (μ stays local)
PROBE = 64  # first trials at each end of the σ range (doubled at σ_hi while they cannot decide)
A_MIN_TRIALS = 4 * PROBE  # trials at σ_hi before the curve's end is judged (chance or a measured a_min)
SUGGESTIVE = 2.0  # standard errors above chance at σ_hi that ask for more trials there
MIN_BATCH, MAX_BATCH = 32, 256  # trials per batch: a quarter of those so far, within these bounds
REMAINING = 0.5  # and at most this share of the trials the tolerance is predicted to still need
MIN_STEPS = 4  # placed batches before the tolerance may stop the estimate
OVERDISPERSED = 0.01  # p-value of the deviance below which μ's error is scaled up by it
MISFIT = 10.0  # ĉ above which no single drop describes the outcomes (digits model: ≤ 3.4; two drops: 18–25)
MAX_FRACTION = 0.25  # never more trials than this share of the full grid's


Outcomes = Callable[[float, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class Trials:
    """Outcomes so far, per distinct σ: trials, summed scores (correct trials, for top1; a
    fractional score, e.g. --metric binary, counts as that fraction of a success), their summed
    squares, non-finite."""

    n: dict[float, int] = field(default_factory=dict)
    k: dict[float, float] = field(default_factory=dict)
    sq: dict[float, float] = field(default_factory=dict)
    bad: dict[float, int] = field(default_factory=dict)
    chips: dict[int, Trials] = field(default_factory=dict)  # per repeat, when a repeat is one shared draw

    def add(self, sigma: float, correct: np.ndarray, nonfinite: np.ndarray, chip: int | None = None) -> None:
        """Outcomes of trials at ``sigma``; ``chip``: the repeat they ran under, kept apart when each
        repeat is one draw that all its samples share (weight noise: one programmed chip)."""
        correct = np.asarray(correct, np.float64)  # booleans would make correct @ correct a bool, not a count
        self.n[sigma] = self.n.get(sigma, 0) + len(correct)
        self.k[sigma] = self.k.get(sigma, 0.0) + float(correct.sum())
        self.sq[sigma] = self.sq.get(sigma, 0.0) + float(correct @ correct)
        self.bad[sigma] = self.bad.get(sigma, 0) + int(nonfinite.sum())
        if chip is not None:
            self.chips.setdefault(chip, Trials()).add(sigma, correct, nonfinite)

    def without(self, chip: int) -> Trials:
        """The trials of every chip but ``chip`` (a σ that only it measured left out)."""
        gone, rest = self.chips[chip], Trials()
        for s, n in self.n.items():
            if n > gone.n.get(s, 0):
                rest.n[s] = n - gone.n.get(s, 0)
                rest.k[s] = self.k[s] - gone.k.get(s, 0.0)
                rest.sq[s] = self.sq[s] - gone.sq.get(s, 0.0)
                rest.bad[s] = self.bad[s] - gone.bad.get(s, 0)
        return rest

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sigma = np.array(sorted(self.n))
        return sigma, np.array([self.k[s] for s in sigma]), np.array([self.n[s] for s in sigma])

    def dispersion(self, sigma: np.ndarray) -> np.ndarray:
        """Per σ, one trial's score variance over p(1 − p): 1 for 0/1 scores (Bernoulli trials),
        less for fractional ones (a mean over pixels or positions varies far less); a σ whose
        trials all scored the same takes the smallest ratio measured at another σ. Trials
        weigh 1/dispersion in the likelihood: the quasi-likelihood of the scores' own spread."""
        ratio = np.ones(len(sigma))
        fractional = np.array([self.sq[s] != self.k[s] for s in sigma])
        if not fractional.any():
            return ratio
        every = np.array(sorted(self.n))
        y = np.array([self.k[s] / self.n[s] for s in every])
        var = np.array([self.sq[s] / self.n[s] for s in every]) - y**2
        with np.errstate(divide="ignore", invalid="ignore"):
            measured = var / (y * (1 - y))
        positive = measured[(var > 0) & np.isfinite(measured)]
        floor = float(positive.min()) if positive.size else 1.0
        own = dict(zip(every, np.where((var > 0) & np.isfinite(measured), np.minimum(measured, 1.0), floor), strict=True))
        return np.where(fractional, [own[s] for s in sigma], 1.0)

    def levels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(σ, mean score, its standard error) per distinct σ, sorted; the error as fit.binomial_se
        gives it (clipped off 0 and 1), times √dispersion."""
        sigma, k, n = self.arrays()
        y = k / n
        clipped = np.clip(y, 1 / (n + 1), n / (n + 1))
        return sigma, y, np.sqrt(clipped * (1 - clipped) / n * self.dispersion(sigma))

    def at(self, sigma: float) -> tuple[float, float]:
        """(mean score, its standard error) at ``sigma``: the error the binomial's, times √dispersion."""
        n = self.n[sigma]
        y = self.k[sigma] / n
        return y, float(binomial_se(y, n)) * float(np.sqrt(self.dispersion(np.array([sigma]))[0]))

    @property
    def total(self) -> int:
        return sum(self.n.values())


class Posterior:
    """The posterior over (shape, log μ, s) for a_max, a_min held, on a log-μ grid in [lo, hi]."""

    def __init__(self, a_max: float, a_min: float, lo: float, hi: float) -> None:
        self.a_max, self.a_min, self.lo, self.hi = a_max, a_min, lo, hi
        self.window = (lo, hi)  # the log-μ grid of the last fit

    def like(self, a_min: float) -> Posterior:
        """The same posterior's settings with another a_min, on the same log-μ window."""
        other = Posterior(self.a_max, a_min, self.lo, self.hi)
        other.window = self.window
        return other

    def p(self, sigma: np.ndarray, shape: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
        """P(correct) at each σ (rows) for each parameter set (columns: shape index, sorted;
        log μ; s)."""
        x = np.log(sigma)[:, None] - m[None, :]
        bounds = np.searchsorted(shape, np.arange(len(SHAPES) + 1))
        for g, name in enumerate(SHAPES):
            cols = slice(bounds[g], bounds[g + 1])
            if name == "linear":
                x[:, cols] = np.expm1(np.clip(x[:, cols], -50, 50))
            x[:, cols] = _UNIT[name](x[:, cols] / s[cols])
        return np.clip(self.a_min + (self.a_max - self.a_min) * x, LAPSE, 1 - LAPSE, out=x)

    def drop(self, trials: Trials) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(σ, correct, trials) of the drop: the σ whose accuracy lies significantly between the
        plateaus and, on each side, the σ up to the nearest one on that side's plateau, as the
        grid fit fits its shapes (fit.py: tails far from μ would otherwise pull a shape that
        does not match them exactly); all σ while none lies inside. A few dozen trials can put
        a σ past the drop inside by chance: the window then still reaches the plateaus around
        the drop, instead of leaving out the σ where it lies (and the placement, which sees the
        whole curve, sending batch after batch there to no effect)."""
        sigma, k, n = trials.arrays()
        _, y, se = trials.levels()
        below_top, above_bottom = y < self.a_max - SIGNIFICANT * se, y > self.a_min + SIGNIFICANT * se
        inside = np.flatnonzero(below_top & above_bottom)
        if inside.size == 0:
            return sigma, k, n
        left = int(inside[0]) - 1
        while left > 0 and below_top[left]:
            left -= 1
        right = int(inside[-1]) + 1
        while right < len(sigma) - 1 and above_bottom[right]:
            right += 1
        if right < len(sigma) and y[right] < self.a_min - SIGNIFICANT * se[right]:
            right -= 1  # fallen below a_min (label-free outputs that collapse onto one class): past the end the curve models
        keep = slice(max(left, 0), right + 1)
        return sigma[keep], k[keep], n[keep]

    def weights(self, trials: Trials, m: np.ndarray) -> np.ndarray:
        """Normalised posterior on the grid (shapes, ``m``, SLOPES); the linear shape's width
        is s·μ, and wider ones than LINEAR_MAX_SLOPE are ruled out (they would not start at a_max)."""
        sigma, k, n = self.drop(trials)
        weight = 1 / trials.dispersion(sigma)
        g, mm, ss = (a.ravel() for a in np.meshgrid(np.arange(len(SHAPES)), m, SLOPES, indexing="ij"))
        p = self.p(sigma, g, mm, ss)
        ll = ((weight * k) @ np.log(p) + (weight * (n - k)) @ np.log1p(-p)).reshape(len(SHAPES), len(m), len(SLOPES))
        ll[SHAPES.index("linear"), :, SLOPES > LINEAR_MAX_SLOPE] = -np.inf
        w = np.exp(ll - ll.max())
        return w / w.sum()

    def fit(self, trials: Trials) -> tuple[np.ndarray, np.ndarray]:
        """(log-μ grid, posterior): the grid zooms onto the posterior mean ± ZOOM s.d. while that
        is much narrower, so its spacing stays far below μ's error. It starts from the last
        window when the posterior still lies well inside it, else from the whole [lo, hi]."""
        m = np.linspace(*self.window, M_POINTS)
        w = self.weights(trials, m)
        marginal = w.sum(axis=(0, 2))
        if self.window != (self.lo, self.hi) and max(marginal[0], marginal[-1]) > 1e-4 * marginal.max():
            m = np.linspace(self.lo, self.hi, M_POINTS)
            w = self.weights(trials, m)
        for _ in range(6):
            mean, sd = _moments(m, w.sum(axis=(0, 2)))
            half = max(ZOOM * sd, 4 * (m[1] - m[0]))  # a posterior within one cell has an s.d. the grid cannot show
            lo, hi = max(mean - half, self.lo), min(mean + half, self.hi)
            if hi - lo > 0.5 * (m[-1] - m[0]):
                break
            m = np.linspace(lo, hi, M_POINTS)
            w = self.weights(trials, m)
        self.window = (float(m[0]), float(m[-1]))
        return m, w

    def next_sigma(self, m: np.ndarray, w: np.ndarray, trials: Trials) -> float:
        """The σ whose next outcome leaves the least expected entropy in the posterior of log μ
        (the Psi-marginal criterion), among CANDIDATES over the range and the zoomed grid, in
        the core: where the posterior expects the curve CORE to 1 − CORE of the way down, and
        between the σ measured significantly above and below that band. A real curve that no
        shape matches (a normal CDF's shoulder falls faster than a logistic's) can keep the
        posterior expecting the core on a shoulder the trials there have shown flat."""
        cands = np.exp(np.union1d(np.linspace(self.lo, self.hi, CANDIDATES), m[::3]))
        live = np.flatnonzero(w.ravel() > 1e-4 * w.max())  # the rest cannot move the expectation
        g, i, j = np.unravel_index(live, w.shape)
        p = self.p(cands, g, m[i], SLOPES[j])
        wl = w.ravel()[live]
        order = np.argsort(i, kind="stable")
        cells, starts = np.unique(i[order], return_index=True)
        joint1 = np.zeros((len(cands), len(m)))  # P(correct, log μ) per candidate
        joint1[:, cells] = np.add.reduceat((p * wl)[:, order], starts, axis=1)
        joint0 = w.sum(axis=(0, 2))[None, :] - joint1
        p1 = joint1.sum(axis=1, keepdims=True)
        entropy = -(xlogy(joint1, joint1 / p1) + xlogy(joint0, np.clip(joint0, 1e-300, None) / (1 - p1))).sum(axis=1)
        depth = (self.a_max - p1[:, 0]) / max(self.a_max - self.a_min, 1e-9)  # expected share of the drop fallen
        core = (depth >= CORE) & (depth <= 1 - CORE) & self.between(trials, cands)
        return float(cands[core][np.argmin(entropy[core])] if core.any() else cands[np.argmin(entropy)])

    def between(self, trials: Trials, cands: np.ndarray) -> np.ndarray:
        """Per candidate, whether it lies above every σ measured significantly above the core
        band's top (a_max − CORE of the drop) and below every σ measured significantly below
        its bottom."""
        sigma, y, se = trials.levels()
        band = CORE * (self.a_max - self.a_min)
        above, below = sigma[y - SIGNIFICANT * se > self.a_max - band], sigma[y + SIGNIFICANT * se < self.a_min + band]
        return (cands > (above.max() if above.size else 0.0)) & (cands < (below.min() if below.size else np.inf))


def _estimate_mu(m: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(μ, its s.d.) from a posterior on the log-μ grid ``m``: the posterior median (half the
    posterior on each side; the mean of a skewed posterior runs ahead of μ by up to 3 % at a
    tolerance of 0.1 on Fréchet-shaped curves) and the posterior standard deviation of μ."""
    return float(_quantiles(m, w, 0.5)), _moments(np.exp(m), w.sum(axis=(0, 2)))[1]


def _quantiles(m: np.ndarray, w: np.ndarray, q: float | list[float]) -> np.ndarray:
    """Quantiles ``q`` of μ's posterior on the log-μ grid ``m``."""
    cdf = np.cumsum(w.sum(axis=(0, 2)))
    return np.exp(np.interp(q, cdf / cdf[-1], m))


def _moments(values: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    mean = float(w @ values / w.sum())
    return mean, float(np.sqrt(max(w @ (values - mean) ** 2 / w.sum(), 0.0)))


def _overdispersion(
    post: Posterior, trials: Trials, m: np.ndarray, w: np.ndarray
) -> tuple[float, float, tuple[str, float]]:
    """(ĉ, G²/dof, the peak's (shape, s)): G² is the deviance of the outcomes per σ about the
    maximum-likelihood curve; ĉ = G²/dof where that is significantly above 1 (the outcomes
    scatter more than Bernoulli trials about any of the shapes), else 1. μ's error is scaled by
    √ĉ, as the grid fit scales by √χ²_red; unlike there, chance excesses do not inflate it."""
    sigma, k, n = post.drop(trials)
    g, i, j = np.unravel_index(int(np.argmax(w)), w.shape)
    p = post.p(sigma, np.array([g]), m[[i]], SLOPES[[j]])[:, 0]
    q = k / n
    g2 = 2 * float(np.sum((xlogy(k, q / p) + xlogy(n - k, (1 - q) / (1 - p))) / trials.dispersion(sigma)))
    dof = len(sigma) - 2
    ratio = g2 / dof if dof > 0 else 1.0
    overdispersed = dof >= 3 and chdtrc(dof, g2) < OVERDISPERSED
    return (ratio if overdispersed else 1.0), ratio, (SHAPES[g], float(SLOPES[j]))


def estimate(
    outcomes: Outcomes,
    n_samples: int,
    repeats: int,
    sigma_lo: float,
    sigma_hi: float,
    a_max: float,
    chance: float,
    grid_evaluations: int,
    tolerance: float = 0.05,
    seed: int | list[int] = 0,
    clean_variance: float | None = None,
    chips: bool = False,
) -> dict:
    """μ of one curve from per-sample trials; a curve in the report's keys (docs/method.md).

    ``outcomes(σ, rows, repeat)`` gives (correct, non-finite) per sample of ``rows`` under noise
    draw ``repeat``. Trials take (sample, repeat) pairs in a seeded order, every sample of one
    repeat before the next repeat, and start over when all are used. ``grid_evaluations``: what
    the full grid would evaluate (its trials), the yardstick of ``sequential.fraction`` and the
    source of the budget (MAX_FRACTION of it). ``clean_variance``: the clean scores' variance
    when they are fractional (a_max's error), None for 0/1 scores. ``chips``: each repeat is one draw
    that all its samples share (weight noise): trials cycle over the repeats, every batch spread
    evenly over them, and μ's error is a jackknife over repeats."""
    rng = np.random.default_rng(seed)
    order = [(r, rng.permutation(n_samples)) for r in range(repeats)]
    cursor = [0]

    def run(sigma: float, count: int, trials: Trials) -> None:
        """``count`` trials at ``sigma``, the next (sample, repeat) pairs in order: every sample of
        one repeat before the next repeat, or with ``chips`` pair i from repeat i mod repeats."""
        if chips:
            pairs = np.arange(cursor[0], cursor[0] + count)
            cursor[0] += count
            for repeat, perm in order:
                mine = pairs[pairs % repeats == repeat] // repeats
                if mine.size:
                    trials.add(sigma, *outcomes(sigma, perm[mine % n_samples], repeat), chip=repeat)
            return
        while count > 0:
            slot, at = divmod(cursor[0], n_samples)
            repeat, perm = order[slot % repeats]
            rows = perm[at : at + count]
            trials.add(sigma, *outcomes(sigma, rows, repeat))
            cursor[0] += len(rows)
            count -= len(rows)

    trials = Trials()
    span = max(a_max - chance, 1e-9)
    a_max_err = float(binomial_se(a_max, n_samples)) if clean_variance is None else float(np.sqrt(clean_variance / n_samples))
    pairs = n_samples * repeats
    probe = min(PROBE, pairs)

    tail = sigma_hi / 10 if sigma_hi / 10 > sigma_lo else float(np.sqrt(sigma_lo * sigma_hi))  # the last decade's start

    def above_chance() -> bool:
        y, se = trials.at(sigma_hi)
        return y - chance > max(SIGNIFICANT * se, CHANCE_MARGIN * span)

    def bottom() -> tuple[float, float, bool]:
        """(a_min, its error, measured): as the grid fit decides, the accuracy at the largest σ where
        that lies clearly above chance and the last decade of σ is flat (a plateau: measured at its
        start too), else chance — a curve still falling at σ_hi has not shown where it ends."""
        if not above_chance() or tail not in trials.n:
            return chance, 0.0, False
        (y, se), (y_tail, se_tail) = trials.at(sigma_hi), trials.at(tail)
        flat = abs(y_tail - y) <= max(SIGNIFICANT * max(se, se_tail), FLAT_TAIL * max(a_max - (y + y_tail) / 2, 1e-12))
        return (y, se, True) if flat else (chance, 0.0, False)

    def undecided() -> bool:
        """Whether σ_hi's trials cannot yet say where the curve ends: fewer than A_MIN_TRIALS (a
        plateau a little above chance, common under multiplicative noise, moves μ; fewer trials
        miss it), or above chance by SUGGESTIVE of their errors yet not clearly (more trials
        would decide it)."""
        n_hi = trials.n[sigma_hi]
        if n_hi >= pairs:
            return False
        if n_hi < A_MIN_TRIALS:
            return True
        y, se = trials.at(sigma_hi)
        return not above_chance() and y - chance > SUGGESTIVE * se and SIGNIFICANT * se > CHANCE_MARGIN * span

    # Does the curve fall by σ_hi? Trials there double until the drop is significant, or shown
    # smaller than MIN_DROP of the span, or every (sample, repeat) pair is used: a few dozen trials
    # cannot tell a small real drop from none, and `not-reached` must not be said on weak evidence.
    run(sigma_hi, probe, trials)
    while True:
        n_hi = trials.n[sigma_hi]
        y_hi, se_hi = trials.at(sigma_hi)
        se = float(np.hypot(a_max_err, se_hi))
        reached = a_max - y_hi > max(SIGNIFICANT * se, MIN_DROP * span)
        if reached or a_max - y_hi + SIGNIFICANT * se <= MIN_DROP * span or n_hi >= pairs:
            break
        run(sigma_hi, min(n_hi, pairs - n_hi), trials)
    while reached and undecided():  # where the curve ends decides a_min: measure it until that is clear
        run(sigma_hi, min(max(trials.n[sigma_hi], A_MIN_TRIALS - trials.n[sigma_hi]), pairs - trials.n[sigma_hi]), trials)
    if reached and above_chance():  # a plateau above chance, or a curve still falling?
        run(tail, probe, trials)
    a_min, a_min_err, a_min_free = bottom()
    base = {"a_max": a_max, "a_max_err": a_max_err}

    def done(status: str, mu: float | None, err: float | None, converged: bool, **fit) -> dict:
        plateaus = {**base, "a_min": a_min, "a_min_err": a_min_err, "a_min_free": a_min_free}
        return _curve(trials, status, mu, err, plateaus, fit, grid_evaluations, tolerance, converged)

    if not reached:
        return done("not-reached", sigma_hi, None, True, bracket=[sigma_hi, None],
                    note=f"accuracy never fell significantly up to σ = {sigma_hi:g}: μ > {sigma_hi:g}")  # fmt: skip
    (y_hi, se_hi), half = trials.at(sigma_hi), (a_max + a_min) / 2
    if y_hi - half > SIGNIFICANT * se_hi:
        return done("not-reached", sigma_hi, None, True, bracket=[sigma_hi, None],
                    note=f"accuracy never fell to the midpoint {half:.3g} up to σ = {sigma_hi:g}: μ > {sigma_hi:g}")  # fmt: skip
    run(sigma_lo, probe, trials)
    y_lo, se_lo = trials.at(sigma_lo)
    if half - y_lo > SIGNIFICANT * se_lo:
        return done("no-drop-from-start", sigma_lo, None, True, bracket=[0.0, sigma_lo], mu_threshold=sigma_lo,
                    note=f"accuracy is already below the midpoint at the smallest σ ({sigma_lo:g}): μ ≤ {sigma_lo:g}")  # fmt: skip

    post = Posterior(a_max, a_min, float(np.log(sigma_lo)), float(np.log(sigma_hi)))
    budget = max(int(MAX_FRACTION * grid_evaluations), 4 * probe)
    steps, between = 0, 0.0
    while True:
        a_min, a_min_err, a_min_free = bottom()
        post.a_min = a_min
        m, w = post.fit(trials)
        mean, sd = _estimate_mu(m, w)
        c_hat, ratio, (shape, slope) = _overdispersion(post, trials, m, w)
        err = sd * np.sqrt(c_hat)
        if chips and (steps >= MIN_STEPS or trials.total >= budget):  # the chips' own spread, once μ is placed
            between = _between_chips(post, trials, err)  # the part more trials cannot narrow
            err = float(np.hypot(err, between))
        part = 0.0  # how far μ moves with a measured a_min (± its error), once the rest is precise
        if a_min_free and (err <= tolerance * mean or trials.total >= budget):
            part = _a_min_part(post, trials, a_min_err)
        converged = steps >= MIN_STEPS and np.hypot(err, part) <= tolerance * mean
        if converged or trials.total >= budget or (part > tolerance * mean and trials.n[sigma_hi] >= pairs):
            break  # done, out of budget, or a_min measured on every (sample, repeat) still moves μ too much
        if between > tolerance * mean:
            break  # the repeats differ by more than the tolerance: only more repeats would narrow μ
        if steps >= MIN_STEPS and c_hat > MISFIT:
            break  # no single drop describes the outcomes: more trials would not make μ mean more
        if part > err and trials.n[sigma_hi] < pairs:  # a_min is the larger part of μ's error: measure it
            run(sigma_hi, min(trials.n[sigma_hi], pairs - trials.n[sigma_hi], budget - trials.total), trials)
        else:
            batch = _batch(trials, float(np.hypot(err, part)) / (tolerance * mean), chips)
            run(post.next_sigma(m, w, trials), min(batch, budget - trials.total), trials)
        steps += 1
    err = float(np.hypot(err, part))
    marginal = w.sum(axis=(0, 2))
    edge = marginal[:2].sum() * (m[0] <= post.lo) + marginal[-2:].sum() * (m[-1] >= post.hi)
    fit = {"slope": slope, "shape": shape, "chi2_red": float(ratio)}
    unresolved = not converged and 1.96 * err >= mean  # μ's 95 % interval reaches 0: a number, not a measurement
    if c_hat > MISFIT or edge > 0.05 or unresolved:
        why = ("the outcomes do not follow one drop" if c_hat > MISFIT else "μ's posterior reaches the ends of the σ range"
               if edge > 0.05 else "μ is not resolved when the trials ran out (μ_err ≥ μ/1.96)")  # fmt: skip
        fit["bracket"] = _poor_bracket(trials, post, m, w, err / max(sd, 1e-300))  # check judges its low end
        return done("poor-fit", mean, err, converged, **fit,
                    note=f"{why} (G²/dof = {ratio:.3g}); the full grid (--estimator grid) shows the curve")  # fmt: skip
    short = ("a_min, measured on every (sample, repeat), moves μ by more than that" if part > tolerance * mean else
             f"the repeats (chips) alone differ by ±{between:.2g} in μ; more --repeats narrow it"
             if between > tolerance * mean else f"the budget of {budget} trials ran out")  # fmt: skip
    note = "" if converged else f"μ_err ≤ {tolerance:g}·μ not reached: {short}"
    return done("ok", mean, err, converged, **fit, note=note)


def _batch(trials: Trials, ratio: float, chips: bool) -> int:
    """Trials in the next batch: a quarter of those so far, but no more than REMAINING of those
    the tolerance is predicted to still need (μ's error is ``ratio`` × the tolerance and its
    variance falls as 1/trials), so that the last batch overshoots the stop by little. Not with
    ``chips``: the jackknife over chips does not fall as 1/trials (a batch spread over ten chips
    moves it by chance), and the shorter last batches left its errors too wide (78 % coverage)."""
    needed = np.inf if chips else trials.total * (ratio**2 - 1)
    return int(np.clip(min(trials.total / 4, REMAINING * needed), MIN_BATCH, MAX_BATCH))


def _poor_bracket(trials: Trials, post: Posterior, m: np.ndarray, w: np.ndarray, widen: float) -> list[float]:
    """Where a `poor-fit` μ lies, for check to judge: μ's 95 % posterior interval, widened as the
    reported error widens the posterior's s.d. (a misfit's √ĉ, a_min, chips), joined with the
    measured crossing — the largest σ measured significantly above the midpoint before the first
    significantly below it, and that one. The posterior of a curve no shape matches can be sure
    of a μ the outcomes do not support; the crossing assumes only a falling curve."""
    lo, hi = _quantiles(m, w, [0.025, 0.975])
    centre = np.log(_quantiles(m, w, 0.5))
    widen = max(widen, 1.0)
    lo, hi = np.exp(centre + (np.log(lo) - centre) * widen), np.exp(centre + (np.log(hi) - centre) * widen)
    sigma, y, se = trials.levels()
    half = (post.a_max + post.a_min) / 2
    below = np.flatnonzero(y + SIGNIFICANT * se < half)
    if below.size:
        first = int(below[0])
        above = np.flatnonzero(y[:first] - SIGNIFICANT * se[:first] > half)
        lo = min(lo, float(sigma[above[-1]]) if above.size else 0.0)
        hi = max(hi, float(sigma[first]))
    return [float(lo), float(hi)]


def _a_min_part(post: Posterior, trials: Trials, a_min_err: float) -> float:
    """Half the change of μ between posteriors at a_min ± its error."""
    ends = [_estimate_mu(*post.like(post.a_min + d).fit(trials))[0] for d in (a_min_err, -a_min_err)]
    return abs(ends[0] - ends[1]) / 2


def _between_chips(post: Posterior, trials: Trials, own: float) -> float:
    """The part of μ's error that the chips (repeats) add, when each is one draw shared by its
    samples (docs/method.md, "Weight noise"): trials within a chip are not independent, so the
    posterior's width ``own`` is too narrow. The delete-one-chip jackknife of the posterior median
    measures the whole error; what it finds beyond ``own`` is the chips' part, widened by Student's
    t on (chips − 1) degrees of freedom as the grid widens its chip spread."""
    chips = sorted(trials.chips)
    if len(chips) < 2:
        return float("inf")
    mus = np.array([_estimate_mu(*post.like(post.a_min).fit(trials.without(c)))[0] for c in chips])
    k = len(mus)
    whole = (k - 1) / k * float(np.sum((mus - mus.mean()) ** 2))
    return float(np.sqrt(max(whole - own**2, 0.0)) * stdtrit(k - 1, ONE_SD))


def _curve(
    trials: Trials,
    status: str,
    mu,
    err,
    base: dict,
    fit: dict,
    grid_evaluations: int,
    tolerance: float,
    converged: bool,
) -> dict:
    """The report curve (same keys as the grid's, docs/report-schema.md): one accuracy per
    measured σ (its trials in ``sequential.trials``)."""
    sigma, k, n = trials.arrays()
    bad = [trials.bad[s] for s in sigma]
    fit_out = {key: None for key in FIT_KEYS} | {"a_min_free": base["a_min_free"], "a_max_err": base["a_max_err"],
                                                 "a_min_err": base["a_min_err"], "note": ""} | fit  # fmt: skip
    return {
        "sigmas": [float(s) for s in sigma],
        "accuracy": [[float(v)] for v in k / n],
        "nonfinite": [[int(b)] for b in bad],
        "mu": None if mu is None else float(mu),
        "mu_err": None if err is None else float(err),
        "a_max": float(base["a_max"]),
        "a_min": float(base["a_min"]),
        "status": status,
        "fit": fit_out,
        "sequential": {
            "evaluations": trials.total,
            "grid_evaluations": int(grid_evaluations),
            "fraction": trials.total / max(grid_evaluations, 1),
            "tolerance": tolerance,
            "converged": bool(converged),
            "trials": [int(v) for v in n],
            "correct": [float(v) for v in k],
        },
    }
