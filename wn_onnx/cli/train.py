"""``wn-onnx train``: the companion path that produces (noise-trained) models to scan."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

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
    noise_model,
    out,
    progress_bar,
)
from wn_onnx.errors import ConfigError, WnError
from wn_onnx.io.config import MAX_EPOCHS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, write_json

if TYPE_CHECKING:
    from wn_onnx.noise import NoiseModel


NOISE_HELP = ("Train with this noise: add · mul · mixed (Gaussian) on activations or weights; on weights (--on weights) "
              "also pcm (PCM devices at time --sigma after programming), quant, bitflip or a plug-in module:Name.")  # fmt: skip
LEVEL_HELP = ("The training noise's level in the model's unit: σ for add/mul/mixed; for pcm the time since programming "
              "(seconds, or 1h, 1d, 1y); bits for quant; the bit error rate for bitflip.")  # fmt: skip


def training_strength(spec: NoiseModel, text: str | None) -> float:
    """The strength of the one level ``text`` gives in ``spec``'s unit (``1y`` for pcm), > 0."""
    try:
        bad_number = not (math.isfinite(float(text)) and float(text) >= 0)
    except (TypeError, ValueError):  # None, or a level with a unit (1y)
        bad_number = False
    if bad_number:
        raise WnError(f"--sigma must be a finite number >= 0, got {text}")
    if not text or not text.strip():
        raise WnError("--noise needs --sigma > 0 (the training noise's level)")
    try:
        strengths = spec.levels(text)
    except ConfigError as error:
        raise WnError(f"--sigma {text}: {error}") from None
    if strengths.size != 1:
        raise WnError(f"--sigma takes one level, got {text!r}")
    if not strengths[0] > 0:
        raise WnError("--noise needs --sigma > 0 (the training noise's level)")
    return float(strengths[0])


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

    from rich.table import Table
    from rich.text import Text

    from wn_onnx.graph_passes.points import parse_indices
    from wn_onnx.io.datasets import load_split
    from wn_onnx.noise import noise_json
    from wn_onnx.training.export import verified_export
    from wn_onnx.training.nets import build
    from wn_onnx.training.trainer import TrainConfig, check_target, train, weight_stats

    arch, device, on = arch.value, device.value, on.value
    for name, value in (("--lr", lr), ("--clamp", clamp)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise WnError(f"{name} must be a finite number > 0, got {value}")
    spec = None
    if noise:
        spec = noise_model(noise, order=order, ratio=sigma_ratio, sigma_mul=sigma_mul, sigma_add=sigma_add,
                           weight_scale=weight_scale, per_tensor=per_tensor, format=fmt, g_max=g_max,
                           prog_scale=prog_scale, drift_scale=drift_scale, read_scale=read_scale,
                           compensation=compensation)  # fmt: skip
        check_target(spec, on)
    elif sigma is not None:
        raise WnError("--sigma without --noise: name the noise to train with")
    strength = training_strength(spec, sigma) if spec else 0.0
    guard_outputs([out_path, checkpoint], [data, val])
    train_split = load_split(dataset, "train", data_dir, data, limit)
    info = train_split.info
    val_split = load_split(dataset, info.val_split, data_dir, val or data if dataset == "npz" else None)
    if dataset == "npz" and val is None:
        err.print("[yellow]no --val given: validating on the training arrays[/]")
    classes = max(len(info.classes), int(train_split.y.max()) + 1)
    net = build(arch, tuple(train_split.x.shape[1:]), classes, bn)
    count = len(net.weight_layers if on == "weights" else net.points)
    points = None if at == "global" else parse_indices(at, count)
    cfg = TrainConfig(arch, dataset, bn, epochs, lr, batch_size, seed, spec, strength, points, clamp,
                      augment and info.augment, device, on)  # fmt: skip
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
        "training_noise": {**noise_json(spec), "on": on, "sigma": float(spec.axis.level(strength)),
                           "at": points if points is not None else "global"} if spec else None,
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
