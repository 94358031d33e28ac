"""What the commands share: option enums, consoles, progress bars, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from wn_onnx.errors import WnError

out = Console(emoji=False)  # ":1:3" in a grid or a tensor name stays text
err = Console(stderr=True, emoji=False)
MAX_THREADS = 4 * (os.cpu_count() or 1)  # threads or processes beyond this only oversubscribe the cores


class Kind(str, Enum):
    add = "add"
    mul = "mul"
    mixed = "mixed"


class Order(str, Enum):
    mul_first = "mul-first"
    add_first = "add-first"


class Mode(str, Enum):
    walking = "walking"
    global_ = "global"
    both = "both"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


OutputOption = Annotated[
    str | None, typer.Option("--output", help="Graph output to score (default: the first float output).")
]


def progress_bar() -> Progress:
    """A Rich progress bar on stderr (stdout stays clean for tables and JSON)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err,
    )  # fmt: skip


def write_json(path: Path, payload: dict) -> None:
    """Write atomically: a reader never sees half a report."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (a temporary file beside ``path``, then a rename); errors are one line."""
    tmp = path.with_name(path.name[:200] + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WnError(f"cannot write {path}: {e.strerror or e}") from None
