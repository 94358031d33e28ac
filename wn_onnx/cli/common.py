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


DataOption = Annotated[Path | None, typer.Option(help=".npz with x (model-ready inputs) and y (integer labels).")]
DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Instead of --data: a dataset's own files (fashion-mnist, cifar10, …), preprocessed as the model's metadata says.",
    ),
]
SplitOption = Annotated[
    str | None, typer.Option(help="--dataset split (default: test, or validation for speech-commands).")
]
DataDirOption = Annotated[Path | None, typer.Option(help="--dataset: folder with its official files.")]
LimitOption = Annotated[int | None, typer.Option(help="Use N samples only (see --limit-mode).", min=1)]


class LimitMode(str, Enum):
    stratified = "stratified"
    first = "first"


LimitModeOption = Annotated[
    LimitMode,
    typer.Option(help="--limit: stratified (every class its share, seeded; default) or first (the first N)."),
]
BatchSizeOption = Annotated[int, typer.Option(help="Samples per onnxruntime batch.", min=1)]
ThreadsOption = Annotated[
    int, typer.Option(help="onnxruntime intra-op threads (0: its default).", min=0, max=MAX_THREADS)
]


def load_data(
    loaded, data: Path | None, dataset_name: str | None, split: str | None, data_dir: Path | None,
    limit: int | None, limit_mode: LimitMode = LimitMode.stratified, require_labels: bool = True,
):  # fmt: skip
    """Evaluation data from ``--data FILE.npz`` or ``--dataset NAME`` (normalised as ``loaded``'s
    metadata says), as every command that runs a model takes it."""
    from wn_onnx.data import load_npz

    if dataset_name:
        from wn_onnx.datasets import model_ready

        return model_ready(loaded.model, dataset_name, split, data_dir, limit, limit_mode.value)
    if data is None:
        raise WnError("give --data FILE.npz with arrays x (model inputs) and y (labels), or --dataset NAME")
    return load_npz(data, limit, require_labels, limit_mode.value)


class Granularity(str, Enum):
    layer = "layer"
    op = "op"


GranularityOption = Annotated[
    Granularity,
    typer.Option(
        help="Points per layer (a compute layer or a whole activation / normalisation function, however many ops "
        "it was exported as) or per op. The paper's models give the same points either way."
    ),
]


class SigmaScale(str, Enum):
    absolute = "absolute"
    std = "std"


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
