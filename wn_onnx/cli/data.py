"""``wn-onnx data``: the paper's datasets' official files, downloaded and checksum-verified."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wn_onnx import api
from wn_onnx.cli.common import out

data_app = typer.Typer(help="Datasets: download the official files (checksums verified).", no_args_is_help=True)


@data_app.command("fetch")
def fetch_command(
    name: Annotated[str, typer.Argument(help="mnist · fashion-mnist · cifar10 · svhn · speech-commands")],
    target: Annotated[Path | None, typer.Option(help="Folder to fill (default: ~/.cache/wn-onnx/NAME).")] = None,
) -> None:
    """Download NAME's official files into the cache (or TARGET), verifying their checksums."""
    folder = api.fetch_dataset(name, target)
    out.print(f"{name}: verified files in {folder}")
