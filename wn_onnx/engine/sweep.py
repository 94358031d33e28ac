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
from typing import Protocol

import numpy as np

from wn_onnx.engine.round_cache import RoundCache
from wn_onnx.errors import ConfigError
from wn_onnx.noise import NoiseSpec


@dataclass
class Counts:
    """Correct predictions and non-finite outputs per (sigma, repeat), summed over batches."""

    correct: np.ndarray
    nonfinite: np.ndarray
    total: int = 0

    @classmethod
    def zeros(cls, n_sigma: int, repeats: int) -> Counts:
        return cls(np.zeros((n_sigma, repeats), np.int64), np.zeros((n_sigma, repeats), np.int64))

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct / max(self.total, 1)


@dataclass
class SweepSettings:
    sigmas: np.ndarray
    spec: NoiseSpec
    repeats: int = 5
    seed: int = 0
    batch_size: int = 1024
    redraw: bool = False  # fresh noise per sigma instead of common random numbers
    walk: str = "suffix"  # "suffix" or "full" (whole noisy graph, the reference path)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError("repeats must be >= 1")
        if self.batch_size < 1:
            raise ConfigError("batch size must be >= 1")


def score(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correct, non-finite) flags per sample; a non-finite row never counts as correct, and a
    padding row (label -1, see :meth:`Dataset.batches`) counts as neither."""
    flat = logits.reshape(len(logits), -1)
    with np.errstate(all="ignore"):
        finite = np.isfinite(flat).all(axis=1)
        pred = np.argmax(np.where(np.isfinite(flat), flat, -np.inf), axis=1)
    return (pred == labels) & finite, ~finite & (labels >= 0)


class Evaluation(Protocol):
    """How one curve's noisy configurations are evaluated on a batch."""

    cache_tag: str  # names the draws kept in a RoundCache

    def start(self, batch: int, first: int, x: np.ndarray) -> None:
        """A new batch (number ``batch``, samples ``first…``)."""

    def chunk(self, st: SweepSettings) -> int:
        """σ values per run on this batch."""

    def noise(self, key: tuple[int, ...]) -> list[np.ndarray]:
        """Draw ``key`` (repeat, and σ index with redraw) for this batch."""

    def logits(self, noise: list[np.ndarray], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> Iterable[np.ndarray]:
        """Outputs for each σ of a chunk (components ``sa``, ``sm``); ``fresh``: a new draw."""


def sweep(
    ev: Evaluation,
    batches: Iterator[tuple[int, np.ndarray, np.ndarray]],
    st: SweepSettings,
    tick: Callable[[int], None],
    clean: Callable[[int, np.ndarray], np.ndarray],
    cache: RoundCache | None = None,
) -> Counts:
    """Counts of every (σ, repeat) of ``st`` over ``batches`` (first index, inputs, labels);
    ``clean(first, x)``: the clean outputs; ``cache``: keeps each (batch, repeat)'s draw for
    later calls (adaptive rounds); ``tick`` gets the number of configurations done."""
    sa_all, sm_all = st.spec.components(st.sigmas)
    counts = Counts.zeros(len(st.sigmas), st.repeats)
    active = np.flatnonzero((sa_all > 0) | (sm_all > 0))
    idle = np.setdiff1d(np.arange(len(st.sigmas)), active)
    for b, (first, x, y) in enumerate(batches):
        ev.start(b, first, x)
        ok, bad = score(clean(first, x), y)  # σ = 0 configurations: the clean result
        counts.total += int(np.count_nonzero(y >= 0))
        counts.correct[idle] += int(ok.sum())
        counts.nonfinite[idle] += int(bad.sum())
        per_chunk = ev.chunk(st)
        for r in range(st.repeats):
            for start in range(0, len(active), per_chunk):
                idx = active[start : start + per_chunk]
                fresh = start == 0 or st.redraw
                if fresh:
                    key = (r, int(idx[0])) if st.redraw else (r,)
                    make = functools.partial(ev.noise, key)
                    noise = make() if cache is None or st.redraw else cache.get((ev.cache_tag, b, r), make)
                for s, lg in zip(idx, ev.logits(noise, sa_all[idx], sm_all[idx], fresh), strict=True):
                    ok, bad = score(lg, y)
                    counts.correct[s, r] += int(ok.sum())
                    counts.nonfinite[s, r] += int(bad.sum())
                tick(len(idx))
    return counts
