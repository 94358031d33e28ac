"""Tiny torch-exported models shaped like deployed ones (issue 16): several inputs, a state fed
from outside, a sigmoid output, per-pixel and per-position outputs. Each comes with data that
wn-onnx and the plain reference (tests/reference.py) both take."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Deployed:
    path: Path
    arrays: dict[str, tuple[int, ...]]  # per-sample inputs: one sample's shape (samples first in the npz)
    metric: str
    feeds: dict[str, np.ndarray] = field(default_factory=dict)  # constants (--feed)
    axes: dict[str, int] = field(default_factory=dict)  # batch axis of a fed input, where not 0

    def data(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {k: rng.standard_normal((n, *shape)).astype(np.float32) for k, shape in self.arrays.items()}


class TwoInputs(nn.Module):
    """A two-tower classifier: inputs ``top`` and ``bot``."""

    def __init__(self) -> None:
        super().__init__()
        self.top, self.bot, self.head = nn.Linear(6, 10), nn.Linear(4, 10), nn.Linear(20, 4)

    def forward(self, top: torch.Tensor, bot: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([torch.relu(self.top(top)), torch.tanh(self.bot(bot))], dim=1))


class Stateful(nn.Module):
    """A VAD-shaped recurrent model: audio frames, a GRU state [1, N, H] and a sample rate (a
    scalar int64) as inputs; the scores and the next state as outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.gru, self.fc = nn.GRU(8, 12, batch_first=True), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.gru(x * (sr.float() / 16000.0), h0)
        return self.fc(y[:, -1]), h


class Binary(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 16), nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x))))


class Segmenter(nn.Module):
    """Per-pixel classes, channels last: [N, H, W, K]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))).permute(0, 2, 3, 1)


class Tagger(nn.Module):
    """A sequence tagger: [N, T, 8] → [N, T, 5]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _export(model: nn.Module, samples: dict[str, torch.Tensor], outputs: list[str], axes: dict, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), tuple(samples.values()), str(path), dynamo=False, opset_version=17,
                          input_names=list(samples), output_names=outputs, dynamic_axes=axes)  # fmt: skip
    return path


def build(folder: Path) -> dict[str, Deployed]:
    """name → Deployed, exported into ``folder``."""
    torch.manual_seed(0)
    n = {0: "N"}
    two = _export(TwoInputs(), {"top": torch.randn(2, 6), "bot": torch.randn(2, 4)}, ["y"],
                  {"top": n, "bot": n, "y": n}, folder / "two_inputs.onnx")  # fmt: skip
    gru = _export(Stateful(), {"x": torch.randn(2, 5, 8), "h0": torch.zeros(1, 2, 12), "sr": torch.tensor(16000)},
                  ["y", "hn"], {"x": n, "h0": {1: "N"}, "y": n, "hn": {1: "N"}}, folder / "stateful.onnx")  # fmt: skip
    binary = _export(Binary(), {"x": torch.randn(2, 10)}, ["p"], {"x": n, "p": n}, folder / "binary.onnx")
    seg = _export(Segmenter(), {"x": torch.randn(2, 3, 6, 6)}, ["y"], {"x": n, "y": n}, folder / "segmenter.onnx")
    tag = _export(Tagger(), {"x": torch.randn(2, 7, 8)}, ["y"], {"x": n, "y": n}, folder / "tagger.onnx")
    state = {"h0": np.zeros((1, 12), np.float32), "sr": np.array(16000)}  # h0: one sample's [1, H]
    return {
        "two_inputs": Deployed(two, {"top": (6,), "bot": (4,)}, "top1"),
        "stateful": Deployed(gru, {"x": (5, 8)}, "top1", state, {"h0": 1}),
        "binary": Deployed(binary, {"x": (10,)}, "binary"),
        "segmenter": Deployed(seg, {"x": (3, 6, 6)}, "per-position"),
        "tagger": Deployed(tag, {"x": (7, 8)}, "per-position"),
    }
