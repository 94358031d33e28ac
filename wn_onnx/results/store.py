"""Results that survive: finished curves are written to SQLite as they complete.

A scan with ``--out report.json`` keeps ``report.json.sqlite`` beside it; every finished curve
(one walking point, or the global sweep) is committed under a key that hashes everything its
numbers depend on (model and data bytes, noise, grid, repeats, seed, labels or label-free, …).
``scan --resume`` takes finished curves from there and computes only the rest: a kill -9 loses
at most the curve in flight, and the resumed report equals an uninterrupted one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

from wn_onnx.errors import WnError

SCHEMA = """
CREATE TABLE IF NOT EXISTS curves (
    key TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def digest(*parts) -> str:
    """Stable hash of JSON-able parts and numpy arrays."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "hash_into"):  # inputs streamed from files (wn_onnx.io.data.Rows)
            part.hash_into(h)
        elif isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


LOCK_SECONDS = 30.0  # how long to wait for another process holding the store
SIDECARS = ("", "-wal", "-shm", "-journal")  # the store's file and those SQLite keeps beside it


def refuse_links(path: Path, what: str) -> None:
    """A store whose file, or one SQLite keeps beside it, is a symbolic link is refused: SQLite
    would write through it, to wherever it points."""
    for suffix in SIDECARS:
        p = path.with_name(path.name + suffix)
        if p.is_symlink():
            raise WnError(f"{p} is a symbolic link; refusing to write the {what} through it (choose another output)")


def open_store(path: Path, schema: str, table: str, columns: list[str], what: str) -> sqlite3.Connection:
    """A WAL SQLite file with ``table`` in ``schema``; a damaged, foreign or locked file is one clear error."""
    db = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        refuse_links(path, what)
        # never open the file with anything but SQLite: closing another descriptor of it would drop
        # the locks of this process's connections (SQLite's POSIX-lock caveat)
        db = sqlite3.connect(path, timeout=LOCK_SECONDS)
        found = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]  # before anything is written
        if found and found != columns:
            db.close()
            raise WnError(f"{path} is not a {what} of this wn-onnx version (table {table!r} has other columns); "
                          "delete it or choose another output")  # fmt: skip
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(schema)
        db.commit()
    except (sqlite3.Error, OSError) as err:
        if db is not None:
            db.close()
        raise store_error(path, err, what) from None
    return db


def store_error(path: Path, err: Exception, what: str) -> WnError:
    """The one-line error for a failing store file, with what to do about it."""
    text = str(err) or type(err).__name__
    if "locked" in text or "busy" in text:
        return WnError(f"{path} is locked by another wn-onnx process (waited {LOCK_SECONDS:g} s); let it finish first")
    if isinstance(err, OSError):
        return WnError(f"cannot create {what} {path}: {err.strerror or err}")
    if "full" in text or "disk I/O" in text:
        return WnError(f"cannot write {what} {path}: {text} (is the disk full?)")
    if "unable to open" in text:
        too_long = len(path.name.encode()) > 255
        return WnError(
            f"cannot create {what} {path}: {'file name too long' if too_long else 'the folder is not writable'}"
        )
    return WnError(
        f"{path} is not a usable {what} ({text}); delete it (its finished results are lost) or choose another output"
    )


class CurveStore:
    """A small SQLite (WAL) table of finished curves, keyed by configuration hash. One scan writes
    it at a time: a second is refused at once (two scans with other settings would otherwise both
    succeed, the last report overwriting the first)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = open_store(self.path, SCHEMA, "curves", ["key", "scope", "result", "created"], "curve store")
        try:
            self.lock = _writer_lock(self.path)
        except BaseException:
            self.db.close()
            raise

    def get(self, key: str) -> dict | None:
        """The stored curve, or None when absent or not a valid curve (then it is computed again)."""
        from wn_onnx.results.schema import curve_problems

        try:
            row = self.db.execute("SELECT result FROM curves WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as err:
            raise store_error(self.path, err, "curve store") from None
        if row is None:
            return None
        try:
            curve = json.loads(row[0])
        except (TypeError, ValueError, RecursionError):
            return None
        return curve if isinstance(curve, dict) and not curve_problems("stored curve", curve) else None

    def put(self, key: str, scope: str, result: dict) -> None:
        try:
            with self.db:  # one transaction per curve: committed or absent, never half
                self.db.execute(
                    "INSERT OR REPLACE INTO curves VALUES (?, ?, ?, ?)", (key, scope, json.dumps(result), time.time())
                )
        except sqlite3.Error as err:
            raise store_error(self.path, err, "curve store") from None

    def close(self) -> None:
        self.db.close()
        os.close(self.lock)  # after the connection: closing a descriptor of the file drops SQLite's POSIX locks


def _writer_lock(path: Path) -> int:
    """A descriptor of ``path`` holding an exclusive flock (released when it is closed, or when the
    process dies: a killed scan never leaves the store locked); opened without following a link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        refuse_links(path, "curve store")  # replaced by a link since SQLite opened it
        raise store_error(path, err, "curve store") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise WnError(f"{path} is being written by another wn-onnx scan; let it finish first or choose another output") from None
    return fd
