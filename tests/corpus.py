"""Tiny networks from outside this project's own exporter, as a user brings them: RNNs whose batch
is not axis 0, attention exported two ways, quantised and half-precision graphs, a noise-trained
net with tiny BatchNorm gains, a batch declared -1 and a model with two outputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn


@dataclass(frozen=True)
class Net:
    path: Path
    shape: tuple[int, ...]  # one sample
    dtype: type = np.float32

    def data(self, n: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, *self.shape)).astype(self.dtype)


class Recurrent(nn.Module):
    """Batch-first RNN classifier: the ONNX LSTM/GRU output Y is [seq, dir, N, H]."""

    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn, self.fc = cell(8, 12, batch_first=True), nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


class Encoder(nn.Module):
    """TransformerEncoder classifier; inside, attention works on [L, N, E] and [N·heads, L, d]."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.enc, self.fc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(x).mean(1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2, self.fc = nn.Conv2d(6, 6, 3, padding=1), nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(h) + h).mean(dim=(2, 3)))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class TinyGainBN(nn.Module):
    """What training under multiplicative noise σ = 1e10 after conv leaves: a BatchNorm gain of
    ~1e-10 that scales the noise back to O(1) — and scales the clean signal below float32's
    resolution next to the BN offset."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4 * 4 * 4, 5)
        with torch.no_grad():
            self.bn.weight.copy_(torch.linspace(1, 3, 4) * 1e-10)
            self.bn.bias.copy_(torch.linspace(-0.2, 0.3, 4))
            self.bn.running_mean.copy_(torch.linspace(-0.1, 0.1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.head, self.aux = nn.Linear(12, 16), nn.Linear(16, 4), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.fc1(x))
        return self.head(h), self.aux(torch.tanh(h))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class BakedBatch(nn.Module):
    """A batch of 4 built into a Reshape target: the batch cannot be freed, runs are padded."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)).reshape(4, -1))


def export(
    model: nn.Module, shape: tuple[int, ...], path: Path, dynamo: bool = False, half: bool = False, fixed: int = 0
) -> Path:
    """TorchScript (or dynamo) export with a dynamic batch axis on the input and every output
    (``fixed``: that batch size, declared and traced in)."""
    model = model.eval().half() if half else model.eval()
    sample = torch.randn(fixed or 2, *shape, dtype=torch.float16 if half else torch.float32)
    with warnings.catch_warnings():  # not under no_grad: torch would export its fused encoder kernel
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (sample,), str(path), dynamo=True, verbose=False, input_names=["x"],
                              dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=4096)}})  # fmt: skip
        else:
            with torch.no_grad():
                outs = ["y"] if isinstance(model(sample), torch.Tensor) else ["y", "aux"]
            torch.onnx.export(model, (sample,), str(path), dynamo=False, do_constant_folding=False, opset_version=17,
                              input_names=["x"], output_names=outs,
                              dynamic_axes=None if fixed else {n: {0: "N"} for n in ["x", *outs]})  # fmt: skip
    return path


def declare_batch(path: Path, value: int, out: Path) -> Path:
    """The model with its input and output batch declared as the number ``value`` (Paddle: -1)."""
    proto = onnx.load(str(path))
    for v in [*proto.graph.input, *proto.graph.output]:
        dim = v.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = value
    onnx.save(proto, str(out))
    return out


def quantize_qdq(path: Path, shape: tuple[int, ...], out: Path) -> Path:
    """Static QDQ quantisation with a tiny calibration set."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            x = np.random.default_rng(1).standard_normal((8, *shape)).astype(np.float32)
            self.items = iter([{"x": x[i : i + 4]} for i in range(0, 8, 4)])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ)
    return out


def build(folder: Path) -> dict[str, Net]:
    """name → Net, exported into ``folder``."""
    torch.manual_seed(0)
    nets = {
        "lstm": Net(export(Recurrent(nn.LSTM), (5, 8), folder / "lstm.onnx"), (5, 8)),
        "gru": Net(export(Recurrent(nn.GRU), (5, 8), folder / "gru.onnx"), (5, 8)),
        "transformer": Net(export(Encoder(), (6, 16), folder / "transformer.onnx"), (6, 16)),
        "transformer_dynamo": Net(export(Encoder(), (6, 16), folder / "transformer_dynamo.onnx", dynamo=True), (6, 16)),
        "residual_cnn": Net(export(Residual(), (3, 8, 8), folder / "residual.onnx"), (3, 8, 8)),
        "fp16": Net(export(MLP(), (12,), folder / "fp16.onnx", half=True), (12,), np.float16),
        "tiny_bn_gain": Net(export(TinyGainBN(), (3, 6, 6), folder / "tiny_bn.onnx"), (3, 6, 6)),
        "two_outputs": Net(export(TwoHeads(), (12,), folder / "two.onnx"), (12,)),
        "fixed_batch": Net(export(BakedBatch(), (12,), folder / "baked.onnx", fixed=4), (12,)),
    }
    cnn = export(SmallCNN(), (3, 8, 8), folder / "cnn.onnx")
    nets["qdq_cnn"] = Net(quantize_qdq(cnn, (3, 8, 8), folder / "qdq.onnx"), (3, 8, 8))
    mlp = export(MLP(), (12,), folder / "mlp.onnx")
    nets["batch_minus_one"] = Net(declare_batch(mlp, -1, folder / "minus_one.onnx"), (12,))
    return nets
