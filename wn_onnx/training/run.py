"""One training run from the settings a user gives: data, the net, noisy training, a verified
ONNX export with its metadata, and the history beside it (``wn-onnx train``, ``wn_onnx.api.train``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from wn_onnx.errors import ConfigError, WnError
from wn_onnx.graph_passes.points import parse_indices
from wn_onnx.io.datasets import load_split
from wn_onnx.io.safeio import guard_outputs, write_json
from wn_onnx.noise import NoiseModel, noise_json
from wn_onnx.training.export import verified_export
from wn_onnx.training.nets import build
from wn_onnx.training.trainer import TrainConfig, check_target, train, weight_stats


@dataclass
class Trained:
    """What a run produced: the exported model's metadata (``meta``: accuracies, normalisation,
    training noise), the mean |w| per layer, the export's largest deviation from torch (relative
    to the largest logit), the per-epoch history, and notes for the user."""

    out: Path
    meta: dict
    weight_stats: list[dict]
    export_error: float
    history: list[dict]
    notes: list[str]


def training_strength(spec: NoiseModel, text: str | float | None) -> float:
    """The strength of the one level ``text`` gives in ``spec``'s unit (``1y`` for pcm), > 0."""
    text = None if text is None else str(text)
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


@dataclass
class Training:
    """The settings of one run (the options of ``wn-onnx train``)."""

    arch: str = "mlp"
    dataset: str = "digits"
    bn: bool = True
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    noise: NoiseModel | None = None
    sigma: str | float | None = None
    on: str = "activations"
    at: str = "global"
    clamp: float | None = None
    augment: bool = True
    limit: int | None = None
    device: str = "cpu"
    data_dir: Path | None = None
    data: Path | None = None
    val: Path | None = None

    def check(self) -> float:
        """The settings' own errors, one line each; the training noise's strength."""
        from wn_onnx.training.nets import ARCHS

        if self.arch not in ARCHS:
            raise WnError(f"unknown architecture {self.arch!r}; choose {', '.join(ARCHS)}")
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise WnError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.on not in ("activations", "weights"):
            raise WnError(f"unknown target {self.on!r}; choose activations, weights")
        for name, value in (("--lr", self.lr), ("--clamp", self.clamp)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise WnError(f"{name} must be a finite number > 0, got {value}")
        if self.noise is None:
            if self.sigma is not None:
                raise WnError("--sigma without --noise: name the noise to train with")
            return 0.0
        check_target(self.noise, self.on)
        return training_strength(self.noise, self.sigma)


Start = Callable[[str, int], None]  # (description, total samples over all epochs)


def run_training(t: Training, out: Path, checkpoint: Path | None = None, resume: bool = False,
                 on_start: Start | None = None, on_epoch: Callable[[dict], None] | None = None,
                 on_step: Callable[[int], None] | None = None) -> Trained:  # fmt: skip
    """Train ``t`` and export it to ``out`` (with ``.history.json`` beside it)."""
    strength = t.check()
    guard_outputs([out, checkpoint], [t.data, t.val])
    train_split = load_split(t.dataset, "train", t.data_dir, t.data, t.limit)
    info = train_split.info
    val_split = load_split(t.dataset, info.val_split, t.data_dir, t.val or t.data if t.dataset == "npz" else None)
    notes = ["no --val given: validating on the training arrays"] if t.dataset == "npz" and t.val is None else []
    classes = max(len(info.classes), int(train_split.y.max()) + 1)
    shape = tuple(train_split.x.shape[1:])
    net = build(t.arch, shape, classes, t.bn)
    try:  # an architecture too deep for the inputs (LeNet-5's 5×5 kernels on 8×8 digits) fails here, named
        with torch.no_grad():
            net.eval()(torch.zeros((1, *shape)))
    except RuntimeError as err:
        raise ConfigError(f"{t.arch} does not fit {t.dataset}'s inputs of shape {list(shape)}: "
                          f"{str(err).splitlines()[0][:160]}") from None  # fmt: skip
    points = None if t.at == "global" else parse_indices(t.at, len(net.weight_layers if t.on == "weights" else net.points))
    cfg = TrainConfig(t.arch, t.dataset, t.bn, t.epochs, t.lr, t.batch_size, t.seed, t.noise, strength, points, t.clamp,
                      t.augment and info.augment, t.device, t.on)  # fmt: skip
    if on_start is not None:
        on_start(f"training {t.arch}{'+BN' if t.bn else ''} on {t.dataset}", t.epochs * len(train_split.x))
    net, history = train(cfg, (train_split.x, train_split.y), (val_split.x, val_split.y), classes, shape, info.mean,
                         info.std, checkpoint or out.with_suffix(".ckpt"), resume, on_epoch, on_step)  # fmt: skip
    stats = weight_stats(net)
    last = history.epochs[-1] if history.epochs else {}
    spec = t.noise
    meta = {
        "arch": t.arch, "dataset": t.dataset, "bn": t.bn, "class_names": info.classes or [str(i) for i in range(classes)],
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "training_noise": {**noise_json(spec), "on": t.on, "sigma": float(spec.axis.level(strength)),
                           "at": points if points is not None else "global"} if spec else None,
        "clamp": t.clamp, "epochs": t.epochs, "seed": t.seed, "weight_stats": stats,
        "val_accuracy": last.get("val_accuracy"), "val_accuracy_noisy": last.get("val_accuracy_noisy"),
    }  # fmt: skip
    if not all(bool(v.isfinite().all()) for v in net.state_dict().values() if v.is_floating_point()):
        raise WnError("training diverged: the network holds NaN or Inf weights (lower --lr or --sigma); nothing exported")
    out.parent.mkdir(parents=True, exist_ok=True)
    error = verified_export(net.cpu(), shape, out, meta, val_split.x[:256])
    write_json(out.with_suffix(".history.json"), {"config": cfg.to_json(), "epochs": history.epochs, "weight_stats": stats})
    return Trained(out, meta, stats, error, history.epochs, notes)
