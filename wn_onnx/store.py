"""Results that survive: finished curves are written to SQLite as they complete.

A scan with ``--out report.json`` keeps ``report.json.sqlite`` beside it; every finished curve
(one walking point, or the global sweep) is committed under a key that hashes everything its
numbers depend on (model and data bytes, noise, grid, repeats, seed, labels or label-free, …).
``scan --resume`` takes finished curves from there and computes only the rest: a kill -9 loses
at most the curve in flight, and the resumed report equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

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
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


class CurveStore:
    """A small SQLite (WAL) table of finished curves, keyed by configuration hash."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(SCHEMA)
        self.db.commit()

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT result FROM curves WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, scope: str, result: dict) -> None:
        with self.db:  # one transaction per curve: committed or absent, never half
            self.db.execute(
                "INSERT OR REPLACE INTO curves VALUES (?, ?, ?, ?)", (key, scope, json.dumps(result), time.time())
            )

    def close(self) -> None:
        self.db.close()
