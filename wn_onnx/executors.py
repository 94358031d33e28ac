"""Where a scan's curves are computed: in the scan process, in a pool of processes (``--jobs``), or
on a Dask cluster (``--workers N``: a LocalCluster; ``--scheduler tcp://…``).

Every executor answers the scanner's two questions the same way — the walked curves of some
points, and the global sweep's counts — so the report does not depend on where it ran. A worker
builds its own engine once per scan (sessions do not cross processes) under the scan's memory
budget: the workers of this machine share it (engine.memory.Share), a remote Dask worker has a
machine and the whole budget to itself. On Dask the global sweep is cut into chunks of σ values
(with common random numbers a σ's counts do not depend on which others share its run: the draws
are keyed by point, repeat and sample block only, engine.draws). The model and memory-mapped
data files are read by path on the workers (a cluster needs them on a shared file system); data
held in memory is sent once to every worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

import numpy as np

from wn_onnx.curve import Levels, walk_one
from wn_onnx.engine import Counts, Engine, SweepSettings
from wn_onnx.engine.memory import Share
from wn_onnx.engine.round_cache import RoundCache
from wn_onnx.errors import WnError
from wn_onnx.graph_passes import Point
from wn_onnx.graph_passes.fold_weights import weights_folded
from wn_onnx.io.data import Dataset
from wn_onnx.io.model import load_model
from wn_onnx.scan_config import ScanConfig

Scale = Callable[[Point], float | None]  # a walked point's relative-σ unit (its clean std), or None
Tick = Callable[[float], None]


class Serial:
    """The scan process computes everything: points that share a clean prefix are walked
    together (one clean run per batch for the group), and every point reads the walk noise drawn
    once for all of them."""

    def __init__(self, engine: Engine, data: Dataset, config: ScanConfig) -> None:
        self.engine, self.data, self.config = engine, data, config

    def walk(self, points: list[Point], st: SweepSettings, base: Levels, scale: Scale, tick: Tick) -> Iterator[tuple[Point, dict]]:
        """(point, curve) for every point, ticking one unit of progress per point."""
        engine, data = self.engine, self.data
        with engine.shared_draws(points, data, st):
            for group in engine.tap_groups(points, data, st):
                sub = replace(st, batch_size=engine.walk_batch(group, data, st))  # one batch size: shared clean values
                per_point = 1 if self.config.estimator == "sequential" else max(1, engine.sweep_work(data, sub))
                with engine.shared_taps(group, data, sub, revisit=self.config.estimator == "sequential"):
                    for point in group:
                        share = _Share(tick, per_point)
                        yield point, walk_one(engine, point, data, sub, self.config, base, share, scale(point))
                        share.finish()

    def global_counts(self, points: list[Point], st: SweepSettings, scale: np.ndarray | None, cache: RoundCache | None) -> Counts:
        """The global sweep's counts at ``st.sigmas`` (``scale``: relative σ units)."""
        return self.engine.global_sweep(points, self.data, st, lambda _n: None, cache, scale)

    def close(self) -> None:
        pass


class _Share:
    """One point's share of the progress bar: at most 1 while it runs, exactly 1 when it ends
    (``per_point``, the work of one point, is an estimate: stacking, padding)."""

    def __init__(self, tick: Tick, per_point: float) -> None:
        self.tick, self.per_point, self.done = tick, per_point, 0.0

    def __call__(self, n: float) -> None:
        step = min(n / self.per_point, 1.0 - self.done)
        self.done += step
        self.tick(step)

    def finish(self) -> None:
        self.tick(1.0 - self.done)


class Pool(Serial):
    """Walked points in ``config.jobs`` spawned processes; the global sweep in the scan process."""

    def walk(self, points: list[Point], st: SweepSettings, base: Levels, scale: Scale, tick: Tick) -> Iterator[tuple[Point, dict]]:
        if len(points) <= 1:
            yield from super().walk(points, st, base, scale, tick)
            return
        jobs = self.config.jobs
        threads = max(1, (self.config.threads or os.cpu_count() or 1) // jobs)
        init = worker_setup(self.engine, self.data, threads, Share.split(self.config.memory, jobs))  # one shared budget
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=init)
        try:
            with _sigint_held():  # workers start with Ctrl-C held back: no traceback from their imports
                futures = {pool.submit(worker_walk, p, st, self.config, base, scale(p)): p for p in points}
            for future in as_completed(futures):
                yield futures[future], future.result()
                tick(1)
        except BaseException:  # Ctrl-C or SIGTERM here: stop the workers now instead of letting them finish
            for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public handle on the workers
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


class Dask:
    """A Dask client with this scan's setup on every worker."""

    def __init__(self, client, stack: contextlib.ExitStack, token: str, setup, config: ScanConfig) -> None:
        self.client, self.stack, self.token, self.setup, self.config = client, stack, token, setup, config

    @classmethod
    def start(cls, config: ScanConfig, engine: Engine, data: Dataset) -> Dask:
        with contextlib.ExitStack() as stack:
            client, local = stack.enter_context(connect(config.workers, config.scheduler))
            threads = config.threads or (max(1, (os.cpu_count() or 1) // config.workers) if local is not None else 0)
            memory = config.memory if local is None else Share.split(config.memory, config.workers)  # this process holds the scheduler
            [shared] = client.scatter([worker_setup(engine, data, threads, memory)], broadcast=True, hash=False)
            return cls(client, stack.pop_all(), uuid.uuid4().hex, shared, config)

    def _result(self, future):
        try:
            return future.result()
        except WnError:  # the worker's own verdict (too small a share of the budget): one line, as it is
            raise
        except Exception as err:  # a worker lost, or a task that could not be sent
            raise WnError(f"Dask task failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}") from None

    def walk(self, points: list[Point], st: SweepSettings, base: Levels, scale: Scale, tick: Tick) -> Iterator[tuple[Point, dict]]:
        from distributed import as_completed as finished

        futures = {self.client.submit(_walk_task, self.token, self.setup, p, st, self.config, base, scale(p), pure=False): p
                   for p in points}  # fmt: skip
        for future in finished(futures):
            yield futures[future], self._result(future)
            tick(1)

    def global_counts(self, points: list[Point], st: SweepSettings, scale: np.ndarray | None, cache: RoundCache | None) -> Counts:
        """The global sweep's counts, its σ values cut into one chunk per worker."""
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        chunks = [c for c in np.array_split(np.arange(len(st.sigmas)), workers) if len(c)]
        futures = [self.client.submit(_global_task, self.token, self.setup, points, replace(st, sigmas=st.sigmas[c]), scale,
                                      pure=False) for c in chunks]  # fmt: skip
        return Counts.stacked([self._result(f) for f in futures])

    def close(self) -> None:
        self.stack.close()


Executor = Serial | Pool | Dask


@contextlib.contextmanager
def executor_for(config: ScanConfig, engine: Engine, data: Dataset) -> Iterator[Executor]:
    """The executor ``config`` asks for (workers or a scheduler: Dask; jobs > 1: a pool), closed on leaving."""
    if config.workers or config.scheduler:
        chosen: Executor = Dask.start(config, engine, data)
    else:
        chosen = Pool(engine, data, config) if config.jobs > 1 else Serial(engine, data, config)
    try:
        yield chosen
    finally:
        chosen.close()


# --- the worker side -------------------------------------------------------------------------

_WORKER: dict = {}  # this --jobs process's state (worker_state)
_STATE = threading.local()  # one engine per Dask worker thread (a LocalCluster without processes runs threads)


def worker_setup(engine: Engine, data: Dataset, threads: int, memory: int | Share | None) -> tuple:
    """What a worker is sent to build its state from (:func:`worker_state`): the model's file and
    output, whether its weights were folded (graph_passes/fold_weights.py: a worker folds them
    again, to the same weights), the data, providers, threads, the clean outputs the scan process
    computed, the worker's memory budget (a :class:`Share` of the scan's on this machine)."""
    return (engine.loaded.path, engine.loaded.output_name, engine.loaded.weights_folded, data.x, data.y,
            engine.providers, threads, engine.known_clean(data), memory)  # fmt: skip


def worker_state(path: str, output: str, folded: bool, x: np.ndarray, y: np.ndarray, providers: list[str],
                 threads: int, reference: np.ndarray, memory: int | Share | None) -> dict:  # fmt: skip
    """What a worker walks with: its own engine under the memory budget, the data and the clean outputs."""
    data = Dataset(x, y, "worker")
    loaded = load_model(path, output)
    engine = Engine(weights_folded(loaded) if folded else loaded, providers, threads, memory)
    engine.remember_clean(data, reference)  # computed once by the scan process
    engine.keep_draws()  # the walk noise of the first point serves the narrower ones after it
    return {"engine": engine, "data": data}


def worker_walk(point: Point, st: SweepSettings, config: ScanConfig, base: Levels, scale: float | None,
                state: dict | None = None) -> dict:  # fmt: skip
    """One point's curve in a worker (``state``: from :func:`worker_state`; default: this --jobs process's)."""
    own = state or _WORKER
    if "error" in own:  # the worker could not be set up (_worker_init)
        raise own["error"]
    return walk_one(own["engine"], point, own["data"], st, config, base, scale=scale)


def _worker_init(*setup) -> None:
    """Each --jobs process loads the model itself. It ignores Ctrl-C (the scan process terminates
    it) and ends itself when the scan process dies (kill -9 leaves no worker behind)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C held back since the start is dropped
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        _WORKER.update(worker_state(*setup))
    except WnError as err:  # e.g. too small a share of the budget: the scan process reports it, as one line
        _WORKER["error"] = err


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


@contextlib.contextmanager
def _sigint_held():
    """While the workers are spawned, SIGINT is blocked in this thread (the workers inherit the mask,
    so a Ctrl-C stays pending until their initializer drops it) and, if another thread takes it,
    only noted; KeyboardInterrupt is raised once every worker has started."""
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        yield
        return
    noted = []
    previous = signal.signal(signal.SIGINT, lambda *_: noted.append(True))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    except Exception:
        if not noted:
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
    if noted:
        raise KeyboardInterrupt


def _state(token: str, setup: tuple) -> dict:
    """This Dask worker's engine, data and clean outputs for scan ``token``, built on its first task."""
    if getattr(_STATE, "token", None) != token:
        _STATE.token, _STATE.value = None, None  # the previous scan's engine goes first
        _STATE.value = worker_state(*setup)
        _STATE.token = token
    return _STATE.value


def _walk_task(token: str, setup: tuple, point: Point, st: SweepSettings, config: ScanConfig, base: Levels,
               scale: float | None) -> dict:  # fmt: skip
    return worker_walk(point, st, config, base, scale, _state(token, setup))


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
