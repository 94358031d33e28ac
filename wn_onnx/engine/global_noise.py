"""Evaluation of the same σ at every chosen point at once (the global sweep), for
:func:`engine.sweep.sweep`: the whole graph with fed noise, one σ per run."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from wn_onnx.engine.draws import GLOBAL_STREAM, draw_at
from wn_onnx.engine.routes import Routes
from wn_onnx.engine.sweep import SweepSettings
from wn_onnx.graph_passes import Point
from wn_onnx.io.data import Inputs


class GlobalNoise:
    cache_tag = "z"

    def __init__(
        self,
        routes: Routes,
        points: list[Point],
        st: SweepSettings,
        run_noisy: Callable[..., np.ndarray],
        scale: np.ndarray | None = None,
    ) -> None:
        self.routes, self.points, self.st, self.run_noisy = routes, points, st, run_noisy
        # σ per point for σ = 1: 1 (absolute σ) or the point's clean std (relative σ)
        self.unit = np.ones(len(points)) if scale is None else np.asarray(scale, np.float64)

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        self.batch, self.first, self.x = batch, first, x
        # activation shapes, only needed when a draw is made (not when the round cache has it)
        self.shapes = functools.cache(functools.partial(self.routes.shapes, x, [p.tensor for p in self.points]))

    def chunk(self, st: SweepSettings) -> int:
        return 1

    def noise(self, key: tuple[int, ...]) -> list[np.ndarray]:
        """Draw ``key`` at every point, point after point (``spec.draws`` arrays each)."""
        shapes, st = self.shapes(), self.st
        out: list[np.ndarray] = []
        for p in self.points:
            (shape, dtype), axis = shapes[p.tensor], self.routes.sample_axis(p.tensor, self.x)
            out += draw_at(
                st.seed, GLOBAL_STREAM, (p.index, *key), shape, axis, st.spec.draws, dtype, self.first, self.batch
            )
        return out

    def logits(self, noise: list[np.ndarray], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> list[np.ndarray]:
        d = self.st.spec.draws
        zs = {j: noise[j * d : (j + 1) * d] for j in range(len(self.points))}
        return [self.run_noisy(self.points, self.st.spec, self.x, zs, self.unit * sa[0], self.unit * sm[0])]
