"""Scans on a Dask cluster: ``scan --workers N`` (a LocalCluster) or ``--scheduler tcp://…``.

Walking points are tasks, and the global sweep is cut into chunks of σ values (with common
random numbers a σ's counts do not depend on which others share its run: the draws are keyed
by point, repeat and sample block only, engine.draws). Each worker builds its own engine once
per scan (sessions do not cross processes) under the scan's memory budget — the workers of a
local cluster share it (engine.memory.Share), a remote worker has a machine and the whole budget
to itself — and evaluates with the same worker function as the ``--jobs`` pool
(:func:`wn_onnx.scanner.worker_state`). The model
and memory-mapped data files are read by path on the workers (a cluster needs them on a shared
file system); data held in memory is sent once to every worker. Results come back to the scan
process, which writes them to the same SQLite store: the report equals a serial one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from wn_onnx.engine import Counts, Engine, SweepSettings
from wn_onnx.engine.memory import Share
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import Point
from wn_onnx.io.data import Dataset

_STATE = threading.local()  # one engine per worker thread (a LocalCluster without processes runs threads)


def _state(token: str, setup: tuple) -> dict:
    """This worker's engine, data and clean outputs for scan ``token``, built on its first task."""
    from wn_onnx.scanner import worker_state

    if getattr(_STATE, "token", None) != token:
        _STATE.token, _STATE.value = None, None  # the previous scan's engine goes first
        _STATE.value = worker_state(*setup)
        _STATE.token = token
    return _STATE.value


def _walk_task(token: str, setup: tuple, point: Point, st: SweepSettings, req, base, scale: float | None) -> dict:
    from wn_onnx.scanner import _worker_walk

    return _worker_walk(point, st, req, base, scale, _state(token, setup))


def _global_task(token: str, setup: tuple, points: list[Point], st: SweepSettings, scale: np.ndarray | None) -> Counts:
    own = _state(token, setup)
    return own["engine"].global_sweep(points, own["data"], st, lambda _n: None, None, scale)


@contextlib.contextmanager
def connect(workers: int, scheduler: str | None, timeout: float = 10.0) -> Iterator[tuple[Any, Any]]:
    """(a Dask client, the LocalCluster or None): an existing scheduler, or a LocalCluster of real
    worker processes whose scratch space (spilled data, lock files) lies in a temporary folder of
    this run, removed with the cluster; both are closed on leaving."""
    import dask
    from distributed import Client, LocalCluster

    with (
        tempfile.TemporaryDirectory(prefix="wn-onnx-dask-", ignore_cleanup_errors=True) as scratch,
        dask.config.set({"temporary-directory": scratch}),
    ):
        cluster = None
        try:
            if scheduler:
                client = Client(scheduler, timeout=timeout)
            else:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=50, local_directory=scratch)  # fmt: skip
                client = Client(cluster, timeout=timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as err:  # unreachable, or not an address at all
            if cluster is not None:
                cluster.close()
            raise WnError(
                f"cannot reach the Dask scheduler {scheduler or 'LocalCluster'} within {timeout:g} s ({type(err).__name__})"
            ) from None
        try:
            yield client, cluster
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


class Cluster:
    """A Dask client with this scan's setup on every worker."""

    def __init__(self, client, stack: contextlib.ExitStack, token: str, setup) -> None:
        self.client, self.stack, self.token, self.setup = client, stack, token, setup

    @classmethod
    def start(cls, req, engine: Engine, data: Dataset) -> Cluster:
        from wn_onnx.scanner import worker_setup  # the scanner imports this module

        with contextlib.ExitStack() as stack:
            client, local = stack.enter_context(connect(req.workers, req.scheduler))
            threads = req.threads or (max(1, (os.cpu_count() or 1) // req.workers) if local is not None else 0)
            memory = req.memory if local is None else Share.split(req.memory, req.workers)  # this process holds the scheduler
            setup = worker_setup(engine, data, threads, memory)
            [shared] = client.scatter([setup], broadcast=True, hash=False)
            return cls(client, stack.pop_all(), uuid.uuid4().hex, shared)

    def _result(self, future):
        try:
            return future.result()
        except WnError:  # the worker's own verdict (too small a share of the budget): one line, as it is
            raise
        except Exception as err:  # a worker lost, or a task that could not be sent
            raise WnError(f"Dask task failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}") from None

    def walk(
        self, points: list[Point], st: SweepSettings, req, base, scale: Callable[[Point], float | None]
    ) -> Iterator[tuple[Point, dict]]:
        """(point, curve) for every point of ``points``, as the workers finish them (``scale``:
        the point's relative-σ unit, or None)."""
        from distributed import as_completed

        futures = {
            self.client.submit(_walk_task, self.token, self.setup, p, st, req, base, scale(p), pure=False): p
            for p in points
        }
        for future in as_completed(futures):
            yield futures[future], self._result(future)

    def global_sweep(self, points: list[Point], st: SweepSettings, scale: np.ndarray | None) -> Counts:
        """The global sweep's counts, its σ values cut into one chunk per worker (``scale``: relative σ units)."""
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        chunks = [c for c in np.array_split(np.arange(len(st.sigmas)), workers) if len(c)]
        futures = [
            self.client.submit(
                _global_task, self.token, self.setup, points, replace(st, sigmas=st.sigmas[c]), scale, pure=False
            )
            for c in chunks
        ]
        parts = [self._result(f) for f in futures]
        return Counts.stacked(parts)

    def close(self) -> None:
        self.stack.close()
