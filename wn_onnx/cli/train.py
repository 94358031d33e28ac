"""``wn-onnx train``: the companion path that produces (noise-trained) models to scan."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from wn_onnx.cli.common import (
    Arch,
    Device,
    DeviceOption,
    Kind,
    OrderOption,
    SigmaAddOption,
    SigmaMulOption,
    SigmaRatioOption,
    err,
    noise_spec,
    out,
    progress_bar,
)
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_EPOCHS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, write_json


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
    noise: Annotated[Kind | None, typer.Option(help="Train with noise of this kind.")] = None,
    order: OrderOption = None,
    sigma_ratio: SigmaRatioOption = None,
    sigma_mul: SigmaMulOption = None,
    sigma_add: SigmaAddOption = None,
    sigma: Annotated[float, typer.Option(help="Noise strength during training.")] = 0.0,
    at: Annotated[str, typer.Option(help="Noisy points: 0,3,5-8, or 'global' (every point).")] = "global",
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

    from rich.table import Table
    from rich.text import Text

    from wn_onnx.graph_passes.points import parse_indices
    from wn_onnx.io.datasets import load_split
    from wn_onnx.training.export import verified_export
    from wn_onnx.training.nets import build
    from wn_onnx.training.trainer import TrainConfig, train, weight_stats

    arch, device = arch.value, device.value
    spec = noise_spec(noise, order, sigma_ratio, sigma_mul, sigma_add) if noise else None
    for name, value, low in (("--sigma", sigma, 0.0), ("--lr", lr, None), ("--clamp", clamp, None)):
        if value is not None and not (math.isfinite(value) and (value >= low if low is not None else value > 0)):
            raise WnError(f"{name} must be a finite number {'>= 0' if low is not None else '> 0'}, got {value}")
    if spec and sigma <= 0:
        raise WnError("--noise needs --sigma > 0")
    guard_outputs([out_path, checkpoint], [data, val])
    train_split = load_split(dataset, "train", data_dir, data, limit)
    info = train_split.info
    val_split = load_split(dataset, info.val_split, data_dir, val or data if dataset == "npz" else None)
    if dataset == "npz" and val is None:
        err.print("[yellow]no --val given: validating on the training arrays[/]")
    classes = max(len(info.classes), int(train_split.y.max()) + 1)
    count = len(build(arch, tuple(train_split.x.shape[1:]), classes, bn).points)
    points = None if at == "global" else parse_indices(at, count)
    cfg = TrainConfig(
        arch, dataset, bn, epochs, lr, batch_size, seed, spec, sigma, points, clamp, augment and info.augment, device
    )
    ckpt = checkpoint or out_path.with_suffix(".ckpt")
    bar = None if quiet else progress_bar()
    task = None

    def on_epoch(stats: dict) -> None:
        line = f"epoch {stats['epoch']}/{epochs}  loss {stats['loss']:.4f}  train {stats['train_accuracy']:.2%}  val {stats['val_accuracy']:.2%}"
        if "val_accuracy_noisy" in stats:
            line += f"  val under training noise {stats['val_accuracy_noisy']:.2%}"
        (bar.console if bar else err).print(line)

    def on_step(n: int) -> None:
        if bar is not None:
            bar.advance(task, n)

    if bar:
        with bar:
            task = bar.add_task(f"training {arch}{'+BN' if bn else ''} on {dataset}", total=epochs * len(train_split.x))
            net, history = train(cfg, (train_split.x, train_split.y), (val_split.x, val_split.y), classes, tuple(train_split.x.shape[1:]),
                                 info.mean, info.std, ckpt, resume, on_epoch, on_step)  # fmt: skip
    else:
        net, history = train(cfg, (train_split.x, train_split.y), (val_split.x, val_split.y), classes, tuple(train_split.x.shape[1:]),
                             info.mean, info.std, ckpt, resume)  # fmt: skip
    stats = weight_stats(net)
    last = history.epochs[-1] if history.epochs else {}
    meta = {
        "arch": arch, "dataset": dataset, "bn": bn, "class_names": info.classes or [str(i) for i in range(classes)],
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "training_noise": {**spec.to_json(), "sigma": sigma, "at": points if points is not None else "global"} if spec else None,
        "clamp": clamp, "epochs": epochs, "seed": seed, "weight_stats": stats,
        "val_accuracy": last.get("val_accuracy"), "val_accuracy_noisy": last.get("val_accuracy_noisy"),
    }  # fmt: skip
    if not all(bool(t.isfinite().all()) for t in net.state_dict().values() if t.is_floating_point()):
        raise WnError(
            "training diverged: the network holds NaN or Inf weights (lower --lr or --sigma); nothing exported"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    error = verified_export(net.cpu(), tuple(train_split.x.shape[1:]), out_path, meta, val_split.x[:256])
    table = Table(title=Text(f"mean |w| per learnable layer · {out_path}"))
    for col, just in (("#", "right"), ("torch layer", "left"), ("kind", "left"), ("mean |w|", "right")):
        table.add_column(col, justify=just)
    for row in stats:
        table.add_row(
            "—" if row["point"] is None else str(row["point"]), row["layer"], row["kind"], f"{row['mean_abs']:.4f}"
        )
    out.print(table)
    accuracy = f"val accuracy {meta['val_accuracy']:.2%}"
    if meta["val_accuracy_noisy"] is not None:  # a network trained for noise is judged under that noise
        accuracy = (
            f"val accuracy clean {meta['val_accuracy']:.2%} · under the training noise {meta['val_accuracy_noisy']:.2%}"
        )
    out.print(
        f"{accuracy} · export matches torch within {error:.1e} of the largest logit · {out_path}", highlight=False
    )
    write_json(
        out_path.with_suffix(".history.json"),
        {"config": cfg.to_json(), "epochs": history.epochs, "weight_stats": stats},
    )
