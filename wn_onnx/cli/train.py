"""``wn-onnx train``: the companion path that produces (noise-trained) models to scan."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from wn_onnx import api
from wn_onnx.cli.common import (
    Arch,
    CompensationOption,
    Device,
    DeviceOption,
    DriftScaleOption,
    FormatOption,
    GMaxOption,
    OnOption,
    OrderOption,
    PerTensorOption,
    ProgScaleOption,
    ReadScaleOption,
    SigmaAddOption,
    SigmaMulOption,
    SigmaRatioOption,
    Target,
    WeightScaleOption,
    err,
    out,
    progress_bar,
)
from wn_onnx.cli.options import NoiseArgs
from wn_onnx.io.config import MAX_EPOCHS, MAX_SEED

NOISE_HELP = ("Train with this noise: add · mul · mixed (Gaussian) on activations or weights; on weights (--on weights) "
              "also pcm (PCM devices at time --sigma after programming), quant, bitflip or a plug-in module:Name.")  # fmt: skip
LEVEL_HELP = ("The training noise's level in the model's unit: σ for add/mul/mixed; for pcm the time since programming "
              "(seconds, or 1h, 1d, 1y); bits for quant; the bit error rate for bitflip.")  # fmt: skip


def train_command(
    arch: Annotated[Arch, typer.Option(help="The paper's architecture.")] = Arch.mlp,
    dataset: Annotated[
        str, typer.Option(help="digits · mnist · fashion-mnist · cifar10 · svhn · speech-commands · npz")
    ] = "digits",
    data_dir: Annotated[Path | None, typer.Option(help="Folder holding the dataset's official files.")] = None,
    data: Annotated[Path | None, typer.Option(help="--dataset npz: training arrays x, y.")] = None,
    val: Annotated[Path | None, typer.Option(help="--dataset npz: validation arrays x, y.")] = None,
    bn: Annotated[bool, typer.Option("--bn/--no-bn", help="BatchNorm after every Conv/Linear but the last.")] = True,
    epochs: Annotated[
        int, typer.Option(help="Training epochs (reference: 100 for MLPs, 300 for LeNet-5).", min=1, max=MAX_EPOCHS)
    ] = 100,
    lr: Annotated[float, typer.Option(help="Adam learning rate (cosine-annealed over all epochs).")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Batch size.", min=1)] = 128,
    seed: Annotated[
        int, typer.Option(help="Seed of initialisation, data order, augmentation and noise.", min=0, max=MAX_SEED)
    ] = 0,
    noise: Annotated[str | None, typer.Option(help=NOISE_HELP)] = None,
    on: OnOption = Target.activations,
    order: OrderOption = None,
    sigma_ratio: SigmaRatioOption = None,
    sigma_mul: SigmaMulOption = None,
    sigma_add: SigmaAddOption = None,
    weight_scale: WeightScaleOption = None,
    per_tensor: PerTensorOption = False,
    fmt: FormatOption = None,
    g_max: GMaxOption = None,
    prog_scale: ProgScaleOption = None,
    drift_scale: DriftScaleOption = None,
    read_scale: ReadScaleOption = None,
    compensation: CompensationOption = None,
    sigma: Annotated[str | None, typer.Option("--sigma", "--level", help=LEVEL_HELP)] = None,
    at: Annotated[str, typer.Option(help="Noisy points (--on weights: weight layers): 0,3,5-8, or 'global' (all).")] = "global",
    clamp: Annotated[float | None, typer.Option(help="Clamp non-BN weights to [−C, C] after every step.")] = None,
    augment: Annotated[bool, typer.Option(help="RandomCrop(pad 4) + flip for the image datasets (docs/reference.md).")] = True,
    limit: Annotated[int | None, typer.Option(help="Train on N samples only, class-stratified (smoke runs).", min=1)] = None,
    device: DeviceOption = Device.cpu,
    out_path: Annotated[Path, typer.Option("--out", help="Exported ONNX model.")] = Path("model.onnx"),
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file (default: OUT with .ckpt).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train a paper architecture (noisy or not) and export it to ONNX with BatchNorm kept."""
    spec = None
    if noise:
        given = NoiseArgs(order=order, sigma_ratio=sigma_ratio, sigma_mul=sigma_mul, sigma_add=sigma_add,
                          weight_scale=weight_scale, per_tensor=per_tensor, fmt=fmt, g_max=g_max, prog_scale=prog_scale,
                          drift_scale=drift_scale, read_scale=read_scale, compensation=compensation)  # fmt: skip
        spec = api.make_noise(noise, **given.options())  # the option → noise-model key mapping of scan and check
    bar = None if quiet else progress_bar()
    task = []

    def on_epoch(stats: dict) -> None:
        line = f"epoch {stats['epoch']}/{epochs}  loss {stats['loss']:.4f}  train {stats['train_accuracy']:.2%}  val {stats['val_accuracy']:.2%}"
        if "val_accuracy_noisy" in stats:
            line += f"  val under training noise {stats['val_accuracy_noisy']:.2%}"
        (bar.console if bar else err).print(line)

    settings = {"arch": arch.value, "dataset": dataset, "bn": bn, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "seed": seed, "noise": spec, "sigma": sigma, "on": on.value, "at": at, "clamp": clamp, "augment": augment,
                "limit": limit, "device": device.value, "data_dir": data_dir, "data": data, "val": val}  # fmt: skip
    with bar or contextlib.nullcontext():
        trained = api.train(out_path, checkpoint=checkpoint, resume=resume, on_epoch=on_epoch,
                            on_start=(lambda d, total: task.append(bar.add_task(d, total=total))) if bar else None,
                            on_step=(lambda n: bar.advance(task[0], n)) if bar else None, **settings)  # fmt: skip
    render_trained(trained)


def render_trained(trained) -> None:
    """The mean |w| per layer and the run's accuracy and export check."""
    for note in trained.notes:
        err.print(f"[yellow]{note}[/]")
    table = Table(title=Text(f"mean |w| per learnable layer · {trained.out}"))
    for col, just in (("#", "right"), ("torch layer", "left"), ("kind", "left"), ("mean |w|", "right")):
        table.add_column(col, justify=just)
    for row in trained.weight_stats:
        table.add_row("—" if row["point"] is None else str(row["point"]), row["layer"], row["kind"], f"{row['mean_abs']:.4f}")
    out.print(table)
    meta = trained.meta
    accuracy = f"val accuracy {meta['val_accuracy']:.2%}"
    if meta["val_accuracy_noisy"] is not None:  # a network trained for noise is judged under that noise
        accuracy = f"val accuracy clean {meta['val_accuracy']:.2%} · under the training noise {meta['val_accuracy_noisy']:.2%}"
    out.print(f"{accuracy} · export matches torch within {trained.export_error:.1e} of the largest logit · {trained.out}",
              highlight=False)  # fmt: skip
