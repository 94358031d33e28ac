"""Weight noise in the forward pass of training (hardware-aware training, as aihwkit's): each
Conv/Linear layer's weight (not its bias) perturbed by a noise model at a fixed strength, a fresh
draw every step, gradients passing straight through to the clean weight.

The perturbation is the scan's own numpy model (:meth:`~wn_onnx.noise.base.NoiseModel.apply`)
run on the detached weight, not a torch port of it: the weights the network learns to tolerate
then follow the very distribution ``wn-onnx scan --on weights`` measures (tests/test_weight_training.py
checks it), every model that acts on weights trains with no second implementation to keep in
step (pcm's device formulas, quant, bitflip, plug-ins). The price: the weights go to the host
and back every step, and numpy draws in float64 — measured on one CPU thread for LeNet-5's 62k
weights, 1 ms per step for mul and 8 ms for pcm, against 26 ms for a step's forward, backward and
update on a batch of 128; small for the paper's networks, not for large ones.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wn_onnx.noise import NoiseModel, Reference
from wn_onnx.noise.base import checked_apply, checked_draw

TRAINING_STREAM = 5  # beside engine.draws' streams 0-4: training's draws are never a scan's
CHANNEL_AXIS = 0  # a torch Conv/Linear weight's output channels (the exported Conv/Gemm's too)


class WeightNoise:
    """One layer's weight noise: ``model`` at ``strength`` with the draws of ``key``
    (``SeedSequence(key)``), held until the next key (a training step, or one evaluation: one
    programmed chip for all its samples)."""

    def __init__(self, model: NoiseModel, strength: float, key: tuple[int, ...], shape: tuple[int, ...]) -> None:
        self.model = model
        self.components = tuple(float(v) for v in model.components(strength))
        self.draws = checked_draw(model, np.random.default_rng(list(key)), shape, strength)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` perturbed, with the gradient of the identity (``w + (noisy − w).detach()``)."""
        clean = w.detach().cpu().numpy()
        noisy = checked_apply(self.model, clean, *self.components, self.draws, Reference.of_weight(clean, CHANNEL_AXIS))
        return w + (torch.from_numpy(noisy).to(w.device) - w).detach()


class NoisyWeight(nn.Module):
    """A layer that multiplies by its weight perturbed by :attr:`weight_noise` when one is set."""

    weight: torch.Tensor
    weight_noise: WeightNoise | None = None

    def used_weight(self) -> torch.Tensor:
        return self.weight if self.weight_noise is None else self.weight_noise(self.weight)


class Linear(nn.Linear, NoisyWeight):
    """``nn.Linear`` whose weight may be noisy (same parameters, state dict and ONNX export)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.used_weight(), self.bias)


class Conv2d(nn.Conv2d, NoisyWeight):
    """``nn.Conv2d`` whose weight may be noisy (same parameters, state dict and ONNX export)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.used_weight(), self.bias)
