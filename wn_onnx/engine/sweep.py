"""The one sweep loop that walking and global sweeps share.

For every batch: the σ = 0 configurations take the clean result (never evaluated through noise
nodes); then per repeat, chunks of the active σ values are evaluated on one noise draw (common
random numbers: one draw per (batch, repeat) for every σ, or one per σ with ``redraw``). What a
chunk costs — which graph, which noise — is the :class:`Evaluation`'s business.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from wn_onnx.engine.round_cache import RoundCache
from wn_onnx.errors import ConfigError
from wn_onnx.io.data import Inputs
from wn_onnx.metrics import get_metric, samples_first, score
from wn_onnx.noise import NoiseModel
from wn_onnx.noise.converters import Converters


class Batch(NamedTuple):
    """One run's samples: the first one's index, the inputs, their labels (None label-free) and
    how many of the rows are samples (the others pad a batch built into the model)."""

    first: int
    x: np.ndarray | Inputs
    y: np.ndarray | None
    samples: int


@dataclass
class Counts:
    """Summed scores (correct predictions, for top1), their summed squares (the spread of
    fractional scores, which the fit's Δy comes from) and non-finite outputs per (sigma, repeat),
    summed over batches; ``total``: the samples scored."""

    correct: np.ndarray
    nonfinite: np.ndarray
    squares: np.ndarray
    total: int = 0

    @classmethod
    def zeros(cls, n_sigma: int, repeats: int) -> Counts:
        return cls(*(np.zeros((n_sigma, repeats), t) for t in (np.float64, np.int64, np.float64)))

    def rows(self, index: np.ndarray | list[int]) -> Counts:
        """The counts of the σ values at ``index``."""
        return Counts(self.correct[index], self.nonfinite[index], self.squares[index], self.total)

    @classmethod
    def stacked(cls, parts: list[Counts]) -> Counts:
        """Counts of disjoint σ values on the same samples, one after another."""
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("correct", "nonfinite", "squares")),
                   parts[0].total)  # fmt: skip

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct / max(self.total, 1)


@dataclass
class SweepSettings:
    sigmas: np.ndarray
    spec: NoiseModel
    repeats: int = 5
    seed: int = 0
    batch_size: int = 1024
    redraw: bool = False  # fresh noise per sigma instead of common random numbers
    walk: str = "suffix"  # "suffix" or "full" (whole noisy graph, the reference path)
    metric: str = "top1"  # see wn_onnx.metrics (a name: settings travel to worker processes)
    top: float | None = None  # the largest strength of the whole grid (draws shared up to it; None: max of sigmas)
    metric_timeout: float | None = None  # seconds a plug-in metric may take on one batch (None: its default)
    converters: Converters | None = None  # the DAC/ADC of each analog layer of a weight scan (noise.converters)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError("repeats must be >= 1")
        if self.batch_size < 1:
            raise ConfigError("batch size must be >= 1")

    def active(self) -> np.ndarray:
        """Indices of the σ values with noise (σ = 0 configurations take the clean result)."""
        sa, sm = self.spec.components(self.sigmas)
        return np.flatnonzero((sa > 0) | (sm > 0))

    def runs(self, per_chunk: int) -> int:
        """Evaluations per batch of :func:`sweep` with ``per_chunk`` σ values per run."""
        return self.repeats * -(-len(self.active()) // per_chunk)


class Evaluation(Protocol):
    """How one curve's noisy configurations are evaluated on a batch."""

    cache_tag: str | None  # names the draws kept in a RoundCache (None: the evaluation keeps its own)

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        """A new batch (number ``batch``, samples ``first…``, or the samples ``first`` lists)."""

    def chunk(self, st: SweepSettings) -> int:
        """σ values per run on this batch (which then takes ``st.runs(chunk)`` calls of :meth:`logits`)."""

    def noise(self, key: tuple[int, ...]) -> list[np.ndarray]:
        """Draw ``key`` (repeat, and σ index with redraw) for this batch."""

    def logits(self, noise: list[np.ndarray], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> Iterable[np.ndarray]:
        """Outputs for each σ of a chunk (components ``sa``, ``sm``); ``fresh``: a new draw."""


def sweep(
    ev: Evaluation,
    batches: Iterator[Batch],
    st: SweepSettings,
    tick: Callable[[int], None],
    clean: Callable[[int, np.ndarray], np.ndarray],
    cache: RoundCache | None = None,
    axis: int = 0,
) -> Counts:
    """Counts of every (σ, repeat) of ``st`` over ``batches``; ``clean(first, x)``: the clean
    outputs, samples first (what label-free scores compare with); ``cache``: keeps each (batch,
    repeat)'s draw for later calls (adaptive rounds); ``tick`` gets the number of configurations
    done; ``axis``: the output's sample axis as the evaluations return it (metrics.score)."""
    sa_all, sm_all = st.spec.components(st.sigmas)
    counts = Counts.zeros(len(st.sigmas), st.repeats)
    active = st.active()
    idle = np.setdiff1d(np.arange(len(st.sigmas)), active)
    metric = get_metric(st.metric, st.metric_timeout)
    for b, (first, x, y, n) in enumerate(batches):
        ev.start(b, first, x)
        reference = clean(first, x)
        ok, bad = score(metric, reference, reference, y, n, axis)  # σ = 0 configurations: the clean result
        counts.total += n
        counts.correct[idle] += ok.sum()
        counts.squares[idle] += ok @ ok
        counts.nonfinite[idle] += int(bad.sum())
        per_chunk = ev.chunk(st)
        for r in range(st.repeats):
            for start in range(0, len(active), per_chunk):
                idx = active[start : start + per_chunk]
                fresh = start == 0 or st.redraw
                if fresh:
                    key = (r, int(idx[0])) if st.redraw else (r,)
                    make = functools.partial(ev.noise, key)
                    kept = cache is not None and ev.cache_tag is not None and not st.redraw
                    noise = cache.get((ev.cache_tag, b, r), make) if kept else make()
                for s, lg in zip(idx, ev.logits(noise, sa_all[idx], sm_all[idx], fresh), strict=True):
                    ok, bad = score(metric, reference, samples_first(lg, axis), y, n, axis)
                    counts.correct[s, r] += ok.sum()
                    counts.squares[s, r] += ok @ ok
                    counts.nonfinite[s, r] += int(bad.sum())
                tick(len(idx))
    return counts
