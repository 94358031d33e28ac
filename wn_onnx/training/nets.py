"""The paper's architectures in torch, with a noise point wherever the ONNX export has one.

Point order (docs/reference.md): the input, then the output of every Linear/Conv, BatchNorm, ReLU and
MaxPool, then the logits; none after Flatten. ``model.points[i]`` is the torch twin of point i
that ``wn-onnx points`` lists on the exported model (tested for every architecture, BN on/off).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wn_onnx.noise import NoiseModel, NoiseSpec
from wn_onnx.training.weight_noise import Conv2d, Linear, NoisyWeight, WeightNoise


class NoisePoint(nn.Module):
    """Identity unless ``sigma > 0``: then the spec's noise in the forward pass, with gradients
    passing straight through (the noise op acts as the identity backwards)."""

    def __init__(self) -> None:
        super().__init__()
        self.spec: NoiseSpec | None = None
        self.sigma = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec is None or self.sigma <= 0:
            return x
        sa, sm = (float(v) for v in self.spec.components(self.sigma))
        z = torch.randn_like(x)
        if self.spec.kind == "add":
            noisy = x + sa * z
        elif self.spec.kind == "mul":
            noisy = x * (1 + sm * z)
        elif self.spec.order == "mul-first":
            noisy = x * (1 + sm * z) + sa * torch.randn_like(x)
        else:
            noisy = (x + sa * z) * (1 + sm * torch.randn_like(x))
        return x + (noisy - x).detach()


class PointNet(nn.Sequential):
    """A Sequential whose NoisePoint children are the noise points, in order."""

    @property
    def points(self) -> list[NoisePoint]:
        return [m for m in self if isinstance(m, NoisePoint)]

    def set_noise(self, spec: NoiseSpec | None, sigma: float, at: Sequence[int] | None) -> None:
        """Noise ``spec`` with ``sigma`` at point indices ``at`` (None: every point)."""
        for i, p in enumerate(self.points):
            on = spec is not None and (at is None or i in at)
            p.spec, p.sigma = (spec, sigma) if on else (None, 0.0)

    @property
    def weight_layers(self) -> list[NoisyWeight]:
        """The Conv/Linear layers in order: weight point i of the exported model is layer i's weight."""
        return [m for m in self if isinstance(m, NoisyWeight)]

    def set_weight_noise(self, model: NoiseModel | None, strength: float, at: Sequence[int] | None,
                         key: tuple[int, ...] = ()) -> None:  # fmt: skip
        """Noise ``model`` at ``strength`` on the weights of layers ``at`` (None: every layer), layer
        i drawing from ``SeedSequence([*key, i])``; ``model`` None: clean weights."""
        for i, layer in enumerate(self.weight_layers):
            on = model is not None and (at is None or i in at)
            layer.weight_noise = WeightNoise(model, strength, (*key, i), tuple(layer.weight.shape)) if on else None


def _stack(layers: list[nn.Module]) -> PointNet:
    """Insert a NoisePoint before everything and after every layer except Flatten."""
    out: list[nn.Module] = [NoisePoint()]
    for layer in layers:
        out.append(layer)
        if not isinstance(layer, nn.Flatten):
            out.append(NoisePoint())
    return PointNet(*out)


def mlp(in_features: int, num_classes: int, bn: bool = True, width: int = 64) -> PointNet:
    """TFC: Flatten → [Linear(64), (BN), ReLU] × 3 → Linear(K). 11 points with BN, 8 without."""
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for _ in range(3):
        layers += [Linear(prev, width)] + ([nn.BatchNorm1d(width)] if bn else []) + [nn.ReLU()]
        prev = width
    return _stack([*layers, Linear(prev, num_classes)])


def lenet5(in_channels: int, num_classes: int, bn: bool = True, size: int = 32) -> PointNet:
    """LeNet-5. 16 points with BN, 12 without."""

    def block(layer: nn.Module, bn_layer: nn.Module) -> list[nn.Module]:
        return [layer] + ([bn_layer] if bn else []) + [nn.ReLU()]

    flat = 16 * (((size - 4) // 2 - 4) // 2) ** 2
    layers = [
        *block(Conv2d(in_channels, 6, 5), nn.BatchNorm2d(6)), nn.MaxPool2d(2),
        *block(Conv2d(6, 16, 5), nn.BatchNorm2d(16)), nn.MaxPool2d(2), nn.Flatten(),
        *block(Linear(flat, 120), nn.BatchNorm1d(120)),
        *block(Linear(120, 84), nn.BatchNorm1d(84)),
        Linear(84, num_classes),
    ]  # fmt: skip
    return _stack(layers)


def cnn_s(num_classes: int = 12, bn: bool = True) -> PointNet:
    """CNN-S of "Hello Edge" without its low-rank linear layer, on 1×49×10 MFCC.

    Kernels are 10 (time) × 4 (MFCC), SPEC's "4×10" read as (frequency × time); the first conv
    strides 2 along MFCC: 49×10 → 40×4 → 31×1. 11 points with BN, 8 without.
    """

    def block(layer: nn.Module, bn_layer: nn.Module) -> list[nn.Module]:
        return [layer] + ([bn_layer] if bn else []) + [nn.ReLU()]

    layers = [
        *block(Conv2d(1, 28, (10, 4), stride=(1, 2)), nn.BatchNorm2d(28)),
        *block(Conv2d(28, 30, (10, 4), stride=1), nn.BatchNorm2d(30)), nn.Flatten(),
        *block(Linear(30 * 31 * 1, 128), nn.BatchNorm1d(128)),
        Linear(128, num_classes),
    ]  # fmt: skip
    return _stack(layers)


ARCHS = ("mlp", "lenet5", "cnn-s")


def build(arch: str, input_shape: Sequence[int], num_classes: int, bn: bool = True) -> PointNet:
    """Architecture ``arch`` for samples of ``input_shape`` (C, H, W)."""
    if arch == "mlp":
        n = 1
        for d in input_shape:
            n *= int(d)
        return mlp(n, num_classes, bn)
    if arch == "lenet5":
        return lenet5(int(input_shape[0]), num_classes, bn, int(input_shape[-1]))
    if arch == "cnn-s":
        return cnn_s(num_classes, bn)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
