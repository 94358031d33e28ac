"""Arrays an adaptive walk would otherwise recompute in every refinement round.

Each round of ``scan --adaptive`` measures a few more σ values of the same point on the same
batches and the same noise draws (common random numbers). What a round needs besides the σ
loop — the clean activations of each batch and the noise of each (batch, repeat), carried
through an affine chain where there is one — is identical from round to round, so it is kept:
in memory up to a budget, then in ``.npy`` files in a private temporary folder up to a disk
budget (the page cache makes re-reading cheap without growing the process), and beyond both
it is recomputed. Memory stays bounded whatever the data size.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np

RAM_BYTES = 128 << 20
DISK_BYTES = 4 << 30


PREFIX = "wn-onnx-rounds-"  # + pid of the owning process
_CLEANED = False


def remove_stale(folder: str | None = None) -> None:
    """Delete round folders whose process is gone (killed by kill -9, or an older version's)."""
    root = Path(folder or tempfile.gettempdir())
    for path in root.glob(f"{PREFIX}*"):
        owner = path.name[len(PREFIX) :].split("-")[0]
        if owner.isdigit() and _alive(int(owner)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RoundCache:
    """``get(key, compute)``: the arrays ``compute()`` returned the first time ``key`` was asked for."""

    def __init__(self, ram_bytes: int = RAM_BYTES, disk_bytes: int = DISK_BYTES) -> None:
        self.ram_left = ram_bytes
        self.disk_left = disk_bytes
        self._ram: dict[Hashable, list[np.ndarray]] = {}
        self._disk: dict[Hashable, tuple[Path, int]] = {}
        self._folder: Path | None = None
        self.hits = 0
        global _CLEANED
        if not _CLEANED:  # once per process: what killed scans left behind
            remove_stale()
            _CLEANED = True

    def get(self, key: Hashable, compute: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        if key in self._ram:
            self.hits += 1
            return self._ram[key]
        if key in self._disk:
            self.hits += 1
            path, count = self._disk[key]
            with path.open("rb") as f:
                return [np.load(f, allow_pickle=False) for _ in range(count)]
        arrays = compute()
        size = sum(a.nbytes for a in arrays)
        if not arrays:
            return arrays
        if size <= self.ram_left:
            self.ram_left -= size
            self._ram[key] = arrays
        elif size <= self.disk_left and self._spill(key, arrays, size):
            self.disk_left -= size
        return arrays

    def _spill(self, key: Hashable, arrays: list[np.ndarray], size: int) -> bool:
        """Write ``arrays`` to a file of their own; a full disk only ends caching, never the scan."""
        try:
            if self._folder is None:  # at most half of the free space
                self._folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
                self.disk_left = min(self.disk_left, shutil.disk_usage(self._folder).free // 2)
            if size > self.disk_left:
                return False
            path = self._folder / f"{len(self._disk)}.npy"
            with path.open("wb") as f:
                for a in arrays:
                    np.save(f, a, allow_pickle=False)
        except OSError:
            self.disk_left = 0
            return False
        self._disk[key] = (path, len(arrays))
        return True

    def close(self) -> None:
        """Forget everything and delete the files."""
        self._ram.clear()
        self._disk.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> RoundCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
