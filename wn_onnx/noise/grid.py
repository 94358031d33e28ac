"""Strength grids: the grammar of ``--levels`` (alias ``--sigmas``) shared by every noise model."""

from __future__ import annotations

import re

import numpy as np

from wn_onnx.errors import ConfigError

_GRID = re.compile(r"^(log|lin):([^:]+):([^:]+):(\d+)$")


MAX_GRID = 10_000  # σ values in one grid: far more than any fit needs


def parse_grid(text: str, what: str = "sigma grid", shown: str | None = None) -> np.ndarray:
    """``log:1e-2:1e10:49``, ``lin:0:2:21`` or ``0.1,0.2,0.5`` → sorted unique float64 array;
    ``what`` and ``shown`` (the text as the user wrote it) name the grid in messages."""
    text = text.strip()
    label = f"{what} {(shown if shown is not None else text)!r}"
    m = _GRID.match(text)
    try:
        if m:
            kind, a, b, n = m.group(1), float(m.group(2)), float(m.group(3)), int(m.group(4))
            if n < 1:
                raise ValueError
            if n > MAX_GRID:
                raise ConfigError(f"{label} has {n} values; at most {MAX_GRID}")
            if kind == "log":
                if a <= 0 or b <= 0:
                    raise ConfigError(f"{label}: a log grid needs positive bounds")
                grid = np.logspace(np.log10(a), np.log10(b), n)
            else:
                grid = np.linspace(a, b, n)
        else:
            if text.count(",") >= MAX_GRID:
                raise ConfigError(f"{label} has more than {MAX_GRID} values")
            grid = np.array([float(v) for v in text.split(",") if v.strip()], dtype=np.float64)
    except ConfigError:  # a ValueError too: keep its own message
        raise
    except ValueError:
        raise ConfigError(
            f"cannot read {label}: use log:START:STOP:N, lin:START:STOP:N or a comma list"
        ) from None
    if grid.size == 0:
        raise ConfigError(f"{label} is empty")
    if not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise ConfigError(f"{label} must hold finite values >= 0")
    return np.unique(grid)
