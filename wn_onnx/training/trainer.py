"""Noisy training of the paper's networks (docs/reference.md): Adam lr 1e-3, cosine annealing over all
epochs, cross-entropy, batch 128, optional noise at one point or all points (activations) or on
the weights of chosen Conv/Linear layers (hardware-aware training: training.weight_noise),
optional weight clamping, a checkpoint every epoch and an exact resume."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from wn_onnx.errors import ConfigError, WnError
from wn_onnx.noise import TARGETS, NoiseModel, NoiseSpec, noise_json
from wn_onnx.training.nets import NoisePoint, PointNet, build
from wn_onnx.training.weight_noise import TRAINING_STREAM

if TYPE_CHECKING:
    from wn_onnx.engine.memory import Share


@dataclass
class TrainConfig:
    arch: str
    dataset: str
    bn: bool = True
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    noise: NoiseModel | None = None
    sigma: float = 0.0  # the noise's strength (NoiseModel's axis: σ, seconds for pcm, 2^-bits for quant)
    at: list[int] | None = None  # noisy point (or weight layer) indices; None with noise = all of them (global)
    clamp: float | None = None
    augment: bool = True
    device: str = "cpu"
    on: str = "activations"  # or "weights": the noise acts on the Conv/Linear layers' weights

    def __post_init__(self) -> None:
        check_target(self.noise, self.on)

    def to_json(self) -> dict:
        d = asdict(self)
        d["noise"] = noise_json(self.noise) if self.noise else None
        return d

    def identity(self) -> dict:
        """What a checkpoint must share with the run that resumes it."""
        d = self.to_json()
        return {
            k: d[k]
            for k in (
                "arch",
                "dataset",
                "bn",
                "epochs",
                "lr",
                "batch_size",
                "seed",
                "noise",
                "sigma",
                "at",
                "clamp",
                "augment",
                "on",
            )
        }


def check_target(noise: NoiseModel | None, on: str) -> None:
    """Refuse noise the trainer cannot inject where asked: on activations only the Gaussian kinds
    (the torch noise points), on weights any model that acts on weights."""
    if on not in TARGETS:
        raise ConfigError(f"unknown target {on!r}; choose activations or weights")
    if noise is None:
        return
    if on not in noise.targets:
        raise ConfigError(f"noise model {noise.name!r} acts on {' and '.join(noise.targets)}, not on {on}")
    if on == "activations" and not isinstance(noise, NoiseSpec):
        raise ConfigError(f"training with noise model {noise.name!r} on activations is not supported: "
                          "add, mul or mixed there, or train with it on the weights (--on weights)")  # fmt: skip


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)


def weight_stats(net: nn.Module) -> list[dict]:
    """Mean |w| of every learnable (Conv/Linear) layer, in order (Table 2 needs their ratio), with
    ``point``: the index of the noise point on the layer's output, as ``wn-onnx points`` numbers it."""
    seen, point = 0, {}
    for name, m in net.named_children():
        if isinstance(m, NoisePoint):
            seen += 1
        else:
            point[name] = seen  # the next NoisePoint, on this layer's output
    return [
        {
            "layer": name,
            "point": point.get(name),
            "kind": type(m).__name__,
            "mean_abs": float(m.weight.detach().abs().mean()),
        }
        for name, m in net.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]


def clamp_weights(net: nn.Module, limit: float) -> None:
    """Clamp weights and biases of non-BatchNorm layers to [-limit, limit]."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.clamp_(-limit, limit)
                if m.bias is not None:
                    m.bias.clamp_(-limit, limit)


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad_value: torch.Tensor) -> torch.Tensor:
    """RandomCrop(32, padding 4) + horizontal flip, vectorised over the batch; padding with the
    normalised value of black, as torchvision does before normalising."""
    n, c, h, w = x.shape
    padded = pad_value.view(1, c, 1, 1).expand(n, c, h + 8, w + 8).clone()
    padded[:, :, 4 : 4 + h, 4 : 4 + w] = x
    i = torch.randint(0, 9, (n,), generator=gen)
    j = torch.randint(0, 9, (n,), generator=gen)
    rows = (i[:, None] + torch.arange(h))[:, None, :, None]
    cols = (j[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


EVAL_BATCH = 1024  # samples per forward pass of an evaluation, at most
# a noise point's forward holds its input, the draws, the noisy value and their difference at once
NOISE_COPIES = 4


def forward_bytes(net: PointNet, sample: torch.Tensor) -> float:
    """Bytes per sample alive at once when ``net`` (noise off: no draws are taken) runs one layer
    at a time on ``sample`` (a batch of one): a layer's input and output, or a noise point's
    :data:`NOISE_COPIES` copies of its input, whichever set is largest."""
    peak, h = 0, sample
    net.eval()  # batch statistics stay as trained
    with torch.no_grad():
        for layer in net:
            out = layer(h)
            peak = max(peak, NOISE_COPIES * h.nbytes if isinstance(layer, NoisePoint) else h.nbytes + out.nbytes)
            h = out
    return peak / len(sample)


def eval_batch(net: PointNet, x: torch.Tensor, memory: int | Share | None) -> int:
    """Samples per forward pass of an evaluation of ``net`` on ``x`` under the memory budget (the
    engine's rule, wn_onnx.engine.memory: this process's fixed part is what it holds now),
    :data:`EVAL_BATCH` at most."""
    from wn_onnx.engine.memory import Budget  # onnxruntime comes with the engine: not for training alone

    return Budget.beyond(memory).samples(forward_bytes(net, x[:1]), EVAL_BATCH)


def evaluate_accuracy(net: PointNet, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            correct += int((net(x[s : s + batch]).argmax(1) == y[s : s + batch]).sum())
    return correct / max(len(x), 1)


def device_for(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise WnError("device cuda: torch sees no CUDA device here")
    if name not in ("cpu", "cuda"):
        raise WnError(f"unknown device {name!r}; use cpu or cuda")
    return torch.device(name)


def train(
    cfg: TrainConfig,
    train_xy: tuple[np.ndarray, np.ndarray],
    val_xy: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    input_shape: tuple[int, ...],
    mean: tuple[float, ...] = (),
    std: tuple[float, ...] = (),
    checkpoint: Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[PointNet, History]:
    """Train a fresh ``cfg.arch`` network (or resume ``checkpoint``); returns it in eval mode."""
    if cfg.epochs < 1:
        raise WnError("epochs must be >= 1")
    device = device_for(cfg.device)
    torch.manual_seed(cfg.seed)
    net = build(cfg.arch, input_shape, num_classes, cfg.bn).to(device)
    points = len(net.weight_layers if cfg.on == "weights" else net.points)
    what = "weight layers" if cfg.on == "weights" else "points"
    if cfg.at is not None and any(not 0 <= k < points for k in cfg.at):
        raise WnError(f"noisy {what} {cfg.at}: {cfg.arch} has {points} {what} (0-{points - 1})")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    history, start = History(), 0
    if resume:
        if checkpoint is None or not checkpoint.is_file():
            raise WnError(f"resume: no checkpoint at {checkpoint}")
        start = _load_checkpoint(checkpoint, cfg, net, opt, sched, gen, history)

    xt = torch.from_numpy(np.ascontiguousarray(train_xy[0], np.float32))
    yt = torch.from_numpy(train_xy[1].astype(np.int64))
    xv = torch.from_numpy(np.ascontiguousarray(val_xy[0], np.float32)).to(device)
    yv = torch.from_numpy(val_xy[1].astype(np.int64)).to(device)
    pad_value = (-torch.tensor(mean) / torch.tensor(std)) if mean else torch.zeros(input_shape[0])
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, cfg.epochs):
        began = time.perf_counter()
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        total, correct, seen = 0.0, 0, 0
        for step, s in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[s : s + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            noise_on(net, cfg, (0, epoch, step))  # weights: a fresh draw every step
            xb = xt[idx]
            if cfg.augment and xb.ndim == 4 and xb.shape[-1] == xb.shape[-2] and xb.shape[-1] >= 16:
                xb = augment_batch(xb, gen, pad_value)
            xb, yb = xb.to(device), yt[idx].to(device)
            opt.zero_grad()
            logits = net(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            if cfg.clamp is not None:
                clamp_weights(net, cfg.clamp)
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            if on_step:
                on_step(len(idx))
        sched.step()
        noise_off(net)
        stats = {"epoch": epoch + 1, "loss": total / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                 "val_accuracy": evaluate_accuracy(net, xv, yv)}  # fmt: skip
        if cfg.noise:
            noise_on(net, cfg, (1, epoch, 0))  # weights: one draw for the whole evaluation (one chip)
            stats["val_accuracy_noisy"] = evaluate_accuracy(net, xv, yv)
            noise_off(net)
        stats["seconds"] = time.perf_counter() - began
        history.epochs.append(stats)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, cfg, net, opt, sched, gen, history, epoch + 1)
        if on_epoch:
            on_epoch(stats)
    noise_off(net)
    return net.eval(), history


def noise_on(net: PointNet, cfg: TrainConfig, key: tuple[int, ...]) -> None:
    """The training noise on, if any: at the noise points, or on the weights with the draws of
    ``key`` (held until the next call; the activation noise draws afresh every forward pass)."""
    if cfg.noise is None:
        return
    if cfg.on == "weights":
        net.set_weight_noise(cfg.noise, cfg.sigma, cfg.at, (cfg.seed, TRAINING_STREAM, *key))
    else:
        net.set_noise(cfg.noise, cfg.sigma, cfg.at)


def noise_off(net: PointNet) -> None:
    net.set_noise(None, 0.0, None)
    net.set_weight_noise(None, 0.0, None)


def _save_checkpoint(path: Path, cfg, net, opt, sched, gen, history: History, epoch: int) -> None:
    state = {
        "epoch": epoch,
        "config": json.dumps(cfg.identity()),
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rng_gen": gen.get_state(),
        "history": json.dumps(history.epochs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, cfg, net, opt, sched, gen, history: History) -> int:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WnError(f"{path}: not a readable wn-onnx checkpoint ({type(err).__name__})") from None
    saved = json.loads(state.get("config", "{}"))
    saved.setdefault("on", "activations")  # checkpoints from before weight noise
    if saved.get("arch") != cfg.arch or saved.get("bn") != cfg.bn or saved.get("dataset") != cfg.dataset:
        raise WnError(
            f"{path}: checkpoint of {saved.get('arch')} (bn={saved.get('bn')}, {saved.get('dataset')}), "
            f"not {cfg.arch} (bn={cfg.bn}, {cfg.dataset})"
        )
    if saved != cfg.identity():
        diff = sorted(k for k in saved if saved[k] != cfg.identity().get(k))
        raise WnError(
            f"{path}: checkpoint was trained with other settings ({', '.join(diff)}); resume with the same ones"
        )
    try:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise WnError(f"{path}: checkpoint does not fit this network ({str(err).splitlines()[0]})") from None
    torch.set_rng_state(state["rng_torch"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    gen.set_state(state["rng_gen"])
    history.epochs = json.loads(state["history"])
    return int(state["epoch"])
