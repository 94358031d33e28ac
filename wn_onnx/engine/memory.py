"""The memory budget of a command that evaluates a model (``--memory``, docs/guide.md "Memory").

Besides what is loaded once (interpreter, libraries, the model, its sessions, data held in
memory), a scan's memory is the values of one onnxruntime run, proportional to the samples per
run, and its caches (clean values shared by a group of walked points, the walk noise shared by
every point, the round cache of adaptive scans). The budget gives the caches a fixed share and picks the samples per run — and
how many σ values share a stacked run — from the bytes per sample of every value, measured by
the axis probe on real samples (engine.axes): a run of B samples holds about B times the
largest set of values alive at once when the graph is walked in order (:func:`peak_live`).
Samples per run never change a report (noise is drawn per sample, docs/method.md), so a small
budget only makes a scan slower.

A command whose evaluation runs in worker processes on this machine (a process pool, a local Dask
cluster) shares one budget between them (:class:`Share`): its own process keeps what it holds when
the workers start, and each of N workers gets an even part of the rest — the default budget's room
(beyond what a process holds once loaded) split N ways. Workers of a remote cluster each have a
machine of their own and the whole budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import resource
import subprocess
import sys
from dataclasses import dataclass

import onnx_ir as ir

from wn_onnx.errors import ConfigError

DEFAULT_CAP = 4 << 30  # the default budget: at most this,
DEFAULT_SHARE = 0.25  # and at most this share of the memory available now
CACHE_SHARE = 0.25  # of the working part (budget − fixed part): caches; the rest: runs
SAFETY = 2.0  # onnxruntime's own buffers beyond the live values (outputs copied out, kernels' scratch)
# copies of the weights alive at once, measured on ResNet-18 (45 MB of weights): the parsed model and
# its serialized bytes; the clean, a prefix and a suffix session, each holding the weights and
# onnxruntime's pre-packed copies; a session being built (model bytes, parsed again)
SESSION_COPIES = 10
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``2G``, ``512M``, ``1.5GB``, ``800MiB`` or plain bytes → bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if m is None:
        raise ConfigError(f"memory size {text!r}: give a size like 2G, 512M or 1.5GB")
    size = int(float(m[1]) * UNITS[m[2].upper()])
    if size < 1 << 20:
        raise ConfigError(f"memory size {text!r}: at least 1M")
    return size


def available_memory() -> int:
    """Bytes the system can give now (MemAvailable; else the physical memory), within RLIMIT_AS."""
    total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    total = int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    if not total:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            total = 8 << 30
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return total if soft == resource.RLIM_INFINITY else min(total, soft)


def default_memory() -> int:
    """The room a command gets beyond what it holds once loaded, when ``--memory`` is not given:
    min(4 GiB, 25 % of the available memory)."""
    return int(min(DEFAULT_CAP, DEFAULT_SHARE * available_memory()))


def current_rss() -> int:
    """Resident bytes of this process now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10


def return_freed_memory() -> None:
    """Have glibc's malloc give large freed blocks back to the system at once (mmap them from
    1 MiB up, trim the heap): otherwise the memory of a finished run stays in the process, and
    its resident size grows with every run of a new shape. Elsewhere: nothing to do."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


def weight_bytes(graph: ir.Graph) -> int:
    return sum(v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None)


def peak_live(graph: ir.Graph, sample_bytes: dict[str, float]) -> float:
    """The most bytes per sample alive at once when the nodes run in graph order: a value lives
    from its node until its last reader (graph outputs to the end). Values without a measured
    size (constants, shapes) count nothing."""
    readers: dict[str, int] = {}
    for node in graph:
        for v in node.inputs:
            if v is not None and v.name in sample_bytes:
                readers[v.name] = readers.get(v.name, 0) + 1
    for v in graph.outputs:
        readers[v.name] = readers.get(v.name, 0) + 1  # never released
    live = sum(sample_bytes.get(v.name, 0.0) for v in graph.inputs)
    peak = live
    for node in graph:
        live += sum(sample_bytes.get(v.name, 0.0) for v in node.outputs)
        peak = max(peak, live)
        for v in node.inputs:
            if v is not None and v.name in readers:
                readers[v.name] -= 1
                if readers[v.name] == 0:
                    live -= sample_bytes[v.name]
        live -= sum(sample_bytes.get(v.name, 0.0) for v in node.outputs if v.name not in readers)  # never read
    return peak


def megabytes(size: float) -> str:
    """Sizes in messages, as the budget is usually given."""
    return f"{size / 2**20:.0f}M"


@dataclass(frozen=True)
class Share:
    """One worker process's part of a command's memory budget, so that N workers on one machine
    stay within the budget together instead of each taking all of it: an explicit ``budget``
    less the ``held`` bytes of the command's own process, split evenly over ``workers``; the
    default budget (``budget`` None): ``room`` bytes beyond what the worker holds once loaded."""

    budget: int | None
    held: int
    workers: int
    room: int

    @classmethod
    def split(cls, budget: int | None, workers: int) -> Share:
        """The part of each of ``workers`` processes, this process keeping what it holds now (the
        default's room is measured here once, not by each worker as the others fill the memory)."""
        return cls(budget, current_rss(), workers, default_memory() // workers)

    @property
    def total(self) -> int | None:
        """A worker's peak resident bytes (None: its fixed part plus ``room``)."""
        return None if self.budget is None else (self.budget - self.held) // self.workers


@dataclass
class Budget:
    """``total`` bytes for the process; ``fixed``: what it holds besides runs and caches."""

    total: int
    fixed: int

    @classmethod
    def measure(cls, memory: int | Share | None, graph: ir.Graph) -> Budget:
        """The budget of a process that evaluates ``graph``: its sessions will hold copies of the weights."""
        return cls.beyond(memory, SESSION_COPIES * weight_bytes(graph))

    @classmethod
    def beyond(cls, memory: int | Share | None, sessions: int = 0) -> Budget:
        """The fixed part: this process's resident memory now, plus the ``sessions`` bytes a
        model's sessions will hold. ``memory``: the process's peak resident bytes, a worker's
        :class:`Share`, or None: the fixed part plus :func:`default_memory`. Too small a budget
        is refused here, with the least that would do."""
        return_freed_memory()
        held = current_rss()
        fixed = held + sessions
        if memory is None:
            return cls(fixed + default_memory(), fixed)
        total = memory if isinstance(memory, int) else memory.total
        if total is None:
            return cls(fixed + memory.room, fixed)
        if total < fixed * 1.25:
            more = f" and the model's sessions need about {megabytes(sessions)} more" if sessions else ""
            if isinstance(memory, int):
                raise ConfigError(f"a memory budget of {megabytes(total)} is too small: the process already holds "
                                  f"{megabytes(held)}{more}; give at least {megabytes(fixed * 1.25)}")  # fmt: skip
            least = memory.held + memory.workers * fixed * 1.25
            raise ConfigError(
                f"a memory budget of {megabytes(memory.budget)} is too small for {memory.workers} worker processes: "
                f"the main process holds {megabytes(memory.held)}, each worker already holds {megabytes(held)}{more}; "
                f"give at least {megabytes(least)}"
            )
        return cls(total, fixed)

    @property
    def caches(self) -> int:
        """Bytes for cached clean values and noise: half for shared taps, a quarter each for the
        walk noise shared by every point and the round cache."""
        return int(CACHE_SHARE * (self.total - self.fixed))

    @property
    def runs(self) -> int:
        """Bytes for the values of one run and its inputs."""
        return self.total - self.fixed - self.caches

    def samples(self, per_sample: float, requested: int) -> int:
        """Samples per run (at most ``requested``, at least 1) for runs needing ``per_sample`` bytes each."""
        if per_sample <= 0:
            return requested
        return max(1, min(requested, int(self.runs / (SAFETY * per_sample))))


def peak_rss_of(argv: list[str]) -> tuple[int, subprocess.CompletedProcess]:
    """Peak resident bytes of command ``argv`` (ru_maxrss of the only child of a fresh
    interpreter, so no other child counts), and its completed process (text output)."""
    code = ("import json, resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(json.dumps([r.returncode, r.stdout, r.stderr, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    rc, stdout, stderr, maxrss = json.loads(done.stdout)
    return maxrss << 10, subprocess.CompletedProcess(argv, rc, stdout, stderr)
