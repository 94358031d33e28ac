"""Typed keys of the TOML files (check config, sweep file): one schema, one clear line per mistake.

TOML has real booleans and numbers, so ``label_free = "false"`` or ``repeats = "many"`` is a
mistake to name, never a value to coerce (a non-empty string would otherwise read as true).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wn_onnx.errors import ConfigError
from wn_onnx.noise import BUILT_IN

MAX_REPEATS = 100_000  # noise draws per σ; beyond this a run would not finish
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_PARALLEL = 4 * (os.cpu_count() or 1)  # threads or processes beyond this only oversubscribe the cores
MAX_EPOCHS = 10_000  # training epochs; the paper's longest runs take 300


@dataclass(frozen=True)
class Key:
    """A key's allowed Python types (bool is never an int here), an optional check, and the
    wording of what is expected; ``many``: a list of such values is allowed too."""

    types: tuple[type, ...]
    rule: str
    check: Callable[[Any], bool] | None = None
    many: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False
        if not isinstance(value, self.types):
            return False
        return self.check is None or self.check(value)


def _finite(v: Any) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


NUMBER = (int, float)
STRING = Key((str,), "a string")
BOOL = Key((bool,), "true or false")
POSITIVE_INT = Key((int,), "a whole number >= 1", lambda v: v >= 1)
SEED = Key((int,), f"a whole number in [0, {MAX_SEED}]", lambda v: 0 <= v <= MAX_SEED)
REPEATS = Key((int,), f"a whole number in [1, {MAX_REPEATS}]", lambda v: 1 <= v <= MAX_REPEATS)
EPOCHS = Key((int,), f"a whole number in [1, {MAX_EPOCHS}]", lambda v: 1 <= v <= MAX_EPOCHS)
NON_NEGATIVE = Key(NUMBER, "a finite number >= 0", lambda v: _finite(v) and v >= 0)
POSITIVE = Key(NUMBER, "a finite number > 0", lambda v: _finite(v) and v > 0)
FRACTION = Key(NUMBER, "a number in [0, 1]", lambda v: _finite(v) and 0 <= v <= 1)
NOISE = Key((str,), f"{', '.join(BUILT_IN)} or module:Name", lambda v: v in BUILT_IN or ":" in v)
TARGET = Key((str,), "activations or weights", lambda v: v in ("activations", "weights"))
ORDER = Key((str,), "mul-first or add-first", lambda v: v in ("mul-first", "add-first"))
GRID = Key(
    (str, list), "a grid string (log:A:B:N, lin:A:B:N) or a non-empty list of finite σ >= 0",
    lambda v: isinstance(v, str) or (bool(v) and all(NON_NEGATIVE.accepts(s) for s in v)),
)  # fmt: skip


def check_keys(conf: dict, schema: dict[str, Key], source: str) -> dict:
    """``conf`` unchanged when every key is known and well typed; else one WnError naming the key."""
    unknown = sorted(set(conf) - set(schema))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(schema))}")
    for name, value in conf.items():
        key = schema[name]
        values = value if key.many and isinstance(value, list) else [value]
        if key.many and isinstance(value, list) and not value:
            raise ConfigError(f"{source}: {name} is an empty list")
        if not all(key.accepts(v) for v in values):
            raise ConfigError(
                f"{source}: {name} = {_shown(value)} must be {key.rule}{' (or a list of them)' if key.many else ''}"
            )
    return conf


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
