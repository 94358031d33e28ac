"""Training of the paper's networks: Adam (lr 1e-3), cosine annealing over all epochs,
cross-entropy, batch size 128 (SPEC.md), optional noise at chosen points."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from wn_onnx.models.nets import PointNet
from wn_onnx.noise import NoiseSpec


def train_classifier(
    net: PointNet,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 128,
    noise: tuple[NoiseSpec, float, Sequence[int] | None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> PointNet:
    """Train ``net`` in place on arrays ``x``/``y``; returns it in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    loss_fn = nn.CrossEntropyLoss()
    net.set_noise(*noise) if noise else net.set_noise(None, 0.0, None)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if on_epoch:
            on_epoch(epoch, total / len(xt))
    net.set_noise(None, 0.0, None)
    return net.eval()
