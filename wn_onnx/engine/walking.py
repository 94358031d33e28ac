"""Evaluations of noise at one point (walking), for :func:`engine.sweep.sweep`.

* :class:`Suffix`: the sub-graph after the point (or after its affine chain), fed the clean
  activations of the batch, σ values stacked on the sample axis where that is exact;
* :class:`AtOutput`: noise on the scored output itself, applied in numpy;
* :class:`FullGraph`: the whole noisy graph with only this point active (the reference path,
  and graphs with control flow, whose reads a cut would miss).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wn_onnx.engine.draws import walk_draw
from wn_onnx.engine.round_cache import RoundCache
from wn_onnx.engine.routes import Route, Routes
from wn_onnx.engine.sessions import BoundInputs, run
from wn_onnx.engine.sweep import SweepSettings
from wn_onnx.graph_passes import Point
from wn_onnx.graph_passes.insert_noise import SIGMA_INPUT
from wn_onnx.graph_passes.noise_functions import sigma_inputs
from wn_onnx.io.data import Inputs
from wn_onnx.noise import apply_noise

CHUNK_ELEMENTS = 1 << 23  # floats per stacked suffix input (32 MB in float32)


class WalkPoint:
    """What every walk evaluation shares: the batch's clean taps and the point's draws, carried
    through the route's chain when there is one."""

    cache_tag = "noise"

    def __init__(self, routes: Routes, point: Point, route: Route, st: SweepSettings, cache: RoundCache | None) -> None:
        self.routes, self.point, self.route, self.st, self.cache = routes, point, route, st, cache

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        self.batch, self.first, self.x = batch, first, x
        self.taps = self._taps([self.point.tensor, *self.route.inputs])
        self.axis = self.routes.sample_axis(self.point.tensor, x)

    def _taps(self, names: list[str]) -> dict[str, np.ndarray]:
        """Clean values of the batch: shared with the walks of other points when they are
        (Routes.shared), else kept in the round cache when there is one (not the input)."""
        shared = self.routes.shared
        if shared is not None and shared.covers(names):  # kept per whole batch for the group
            if np.isscalar(self.first):
                return shared.get(self.first, self.x, names)
            listed = shared.listed(np.asarray(self.first, np.int64), self.x, names)
            if listed is not None:
                return listed
        if self.cache is None:
            return self.routes.run_values(self.x, names)
        inner = [n for n in dict.fromkeys(names) if n not in self.routes.loaded.inputs]

        def compute() -> list[np.ndarray]:
            values = self.routes.run_values(self.x, inner)
            return [values[n] for n in inner]

        kept = self.cache.get(("taps", self.batch), compute)
        return self.routes.feeds(self.x) | dict(zip(inner, kept, strict=True))

    def chunk(self, st: SweepSettings) -> int:
        return 1

    def noise(self, key: tuple[int, ...]) -> list[np.ndarray]:
        """Draw ``key`` of the walk stream that every point reads (engine.draws), as the route
        evaluates it: carried through the chain's linear part when there is one."""
        xk, st = self.taps[self.point.tensor], self.st
        where = (xk.shape, self.axis, st.spec.draws, xk.dtype, self.first, self.batch, self.routes.draws)
        z = walk_draw(st.seed, key, *where)
        if self.route.chain is None:
            return z
        t = z[0] if st.spec.kind == "add" else xk * z[0]
        return run(self.route.chain, (self.route.chain.get_outputs()[0].name,), {self.point.tensor: t})

    def components(self, sa: np.ndarray, sm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """σ as the evaluated noise sees it: through a chain, σ_add or σ_mul becomes the additive σ."""
        if self.route.chain is None:
            return sa, sm
        return (sa if self.st.spec.kind == "add" else sm), np.zeros_like(sa)


class Suffix(WalkPoint):
    """The suffix session keeps its memory from run to run within a batch and gives it back after
    the batch's last run, before the next batch's clean values are computed (the budget counts
    one run at a time)."""

    def start(self, batch: int, first: int | np.ndarray, x: np.ndarray | Inputs) -> None:
        super().start(batch, first, x)
        self.start_value = self.taps[self.route.tensor]
        self.routes.check_stacking(self.route, self.start_value, x)
        self.bound = BoundInputs(self.route.session)  # clean activations go to the device once per batch
        for n in self.route.inputs:
            self.bound.put(n, self.taps[n])
        self.left = 1  # runs on this batch (one, unless a sweep asks for chunks)

    def chunk(self, st: SweepSettings) -> int:
        per_chunk = 1
        if self.route.stack and not st.redraw:
            within = self.routes.stack_samples // len(self.x)  # the memory budget's bound
            per_chunk = max(1, min(CHUNK_ELEMENTS // max(self.start_value.size, 1), within))
        self.left = st.runs(per_chunk)
        return per_chunk

    def logits(self, noise: list[np.ndarray], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> np.ndarray:
        if fresh:  # noise once per draw, not per σ chunk
            for n, arr in zip(("wn_z", "wn_z2"), noise, strict=False):
                self.bound.put(n, arr)
        sa, sm = self.components(sa, sm)
        sigmas = {
            SIGMA_INPUT[comp]: values.astype(np.float32)
            for comp, values in (("sigma_add", sa), ("sigma_mul", sm))
            if comp in sigma_inputs(self.route.spec)
        }
        self.left -= 1
        out = self.bound.run(self.routes.loaded.output_name, sigmas, release=self.left <= 0)
        if len(sa) == 1:  # one σ: the output as the model returns it (its samples on any axis)
            return out[None]
        return out.reshape((len(sa), len(self.x), *out.shape[1:]))  # σ values stacked on the samples' axis 0


class AtOutput(WalkPoint):
    def logits(self, noise: list[np.ndarray], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> np.ndarray:
        start = self.taps[self.route.tensor]
        sa, sm = self.components(sa, sm)
        shape = (len(sa),) + (1,) * start.ndim
        second = noise[1][None] if len(noise) > 1 else None
        with np.errstate(all="ignore"):  # fp16 overflow: counted as non-finite, not printed
            return apply_noise(
                start[None], noise[0][None], second, sa.reshape(shape), sm.reshape(shape), self.route.spec
            )


class FullGraph(WalkPoint):
    def __init__(
        self,
        routes: Routes,
        point: Point,
        ring: list[Point],
        st: SweepSettings,
        run_noisy: Callable[..., np.ndarray],
        cache: RoundCache | None,
    ) -> None:
        route = Route(point.tensor, None, st.spec, None, [p.tensor for p in ring], False)
        super().__init__(routes, point, route, st, cache)
        self.ring, self.run_noisy = ring, run_noisy
        self.hot = np.array([p is point for p in ring], np.float32)

    def logits(self, noise: list[np.ndarray], sa: np.ndarray, sm: np.ndarray, fresh: bool) -> list[np.ndarray]:
        feed = {
            j: (noise if p is self.point else [np.zeros_like(self.taps[p.tensor])] * self.st.spec.draws)
            for j, p in enumerate(self.ring)
        }
        return [
            self.run_noisy(self.ring, self.st.spec, self.x, feed, self.hot * a, self.hot * m)
            for a, m in zip(sa, sm, strict=True)
        ]
