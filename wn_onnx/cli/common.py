"""What the commands share: option enums, consoles, progress bars, JSON output."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from wn_onnx.io.config import MAX_PARALLEL

out = Console(emoji=False)  # ":1:3" in a grid or a tensor name stays text
err = Console(stderr=True, emoji=False)
MAX_THREADS = MAX_PARALLEL  # threads or processes beyond this only oversubscribe the cores


class Kind(str, Enum):
    add = "add"
    mul = "mul"
    mixed = "mixed"


class Order(str, Enum):
    mul_first = "mul-first"
    add_first = "add-first"


class Estimator(str, Enum):
    grid = "grid"
    sequential = "sequential"


class Mode(str, Enum):
    walking = "walking"
    global_ = "global"
    both = "both"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Arch(str, Enum):  # wn_onnx.training.nets.ARCHS
    mlp = "mlp"
    lenet5 = "lenet5"
    cnn_s = "cnn-s"


class Strategy(str, Enum):  # wn_onnx.planner.STRATEGIES
    uniform = "uniform"
    inverse_mu = "inverse-mu"
    greedy = "greedy"


PngOption = Annotated[Path | None, typer.Option(help="Folder for the figures (PNG and SVG).")]
# The options several commands share, declared once (help texts say what the library calls them).
OrderOption = Annotated[Order | None, typer.Option(help="Mixed noise: which component acts first.")]
SigmaRatioOption = Annotated[float | None, typer.Option(help="Mixed: σ_add = A·r, σ_mul = A·(1−r); A is swept.")]
SigmaMulOption = Annotated[float | None, typer.Option(help="Mixed: fixed σ_mul, σ_add swept.")]
SigmaAddOption = Annotated[float | None, typer.Option(help="Mixed: fixed σ_add, σ_mul swept.")]
DeviceOption = Annotated[Device, typer.Option(help="Execution provider.")]
AtOption = Annotated[str | None, typer.Option(help="Points to use: 0,3,5-8 · op:Conv,Gemm · re:PATTERN (default: all).")]


class Target(str, Enum):  # wn_onnx.noise.TARGETS
    activations = "activations"
    weights = "weights"


class Format(str, Enum):  # wn_onnx.noise.FORMATS
    int8 = "int8"
    fp16 = "fp16"
    fp32 = "fp32"


NOISE_HELP = ("add · mul · mixed (Gaussian, the paper's) · quant (b-bit quantisation) · bitflip (bit errors in a "
              "storage format) · pcm (phase-change-memory weights over time) · converters (DAC/ADC bits of analog "
              "layers) · module:Name or file.py:Name (a plug-in; docs/noise-models.md).")  # fmt: skip
ON_HELP = "Where the noise acts: activations after each point, or the weights of each Conv/ConvTranspose/Gemm/MatMul layer."
OnOption = Annotated[Target, typer.Option(help=ON_HELP)]
LEVELS_HELP = ("Strength grid in the noise model's unit (σ, bits, bit error rate, time: s, min, h, d, w, y as in "
               "1h,1d,1y): log:1e-2:1e10:49 · lin:1:16:16 · 0.1,0.2. Default: the model's own grid.")  # fmt: skip
LevelsOption = Annotated[str | None, typer.Option("--levels", "--sigmas", help=LEVELS_HELP)]
WeightScaleOption = Annotated[
    str | None, typer.Option(help="Additive weight noise: relative to the layer's max|W| (max, default) or absolute.")
]
PerTensorOption = Annotated[bool, typer.Option(help="quant on weights: one scale per tensor instead of per output channel.")]
PercentileOption = Annotated[
    float | None, typer.Option(help="quant on activations: clip at this percentile of |x| instead of its maximum.")
]
FormatOption = Annotated[Format | None, typer.Option("--format", help="bitflip: the storage format (default int8).")]


class Compensation(str, Enum):  # wn_onnx.noise.pcm.COMPENSATIONS
    global_ = "global"
    onehot = "onehot"
    none = "none"


GMaxOption = Annotated[float | None, typer.Option(help="pcm: the largest conductance, µS (default 25).")]
ProgScaleOption = Annotated[float | None, typer.Option(help="pcm: scale of the programming noise (default 1).")]
DriftScaleOption = Annotated[float | None, typer.Option(help="pcm: scale of the drift exponents (default 1).")]
ReadScaleOption = Annotated[float | None, typer.Option(help="pcm: scale of the read noise (default 1).")]
class ReadNoise(str, Enum):  # wn_onnx.noise.pcm.READ_NOISE
    repeat = "repeat"
    per_sample = "per-sample"


ReadNoiseOption = Annotated[
    ReadNoise | None,
    typer.Option(help="pcm: read noise drawn once per repeat (default) or per sample (weights read for every input)."),
]
CompensationOption = Annotated[
    Compensation | None,
    typer.Option("--drift-compensation", help="pcm: global (scale each layer's output back by an all-ones readout; "
                 "default), onehot (by one-hot readouts, as aihwkit) or none."),
]


DacBitsOption = Annotated[int | None, typer.Option(help="Weights: a DAC of B bits on each analog layer's input.")]
AdcBitsOption = Annotated[int | None, typer.Option(help="Weights: an ADC of B bits on each analog layer's output.")]
OutNoiseOption = Annotated[
    float | None,
    typer.Option(help="Weights: noise σ on each analog layer's output, relative to its clean max |output| over the data."),
]


DataOption = Annotated[
    Path | None,
    typer.Option(
        help=".npz with x (model-ready inputs) and y (integer labels); streamed: a .npy of inputs (with --labels), "
        "or a folder of x.npy + y.npy or of .npz shards."
    ),
]
LabelsOption = Annotated[Path | None, typer.Option(help="With --data X.npy: the labels as a .npy of integers.")]
MemoryOption = Annotated[
    str | None,
    typer.Option(
        help="Peak memory of the command: 2G, 512M. Worker processes on this machine share it with the main one; "
        "each worker of a remote --scheduler has it all. Default: what each process holds once loaded, plus "
        "min(4G, 25% of the available memory), split between local workers."
    ),
]
DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Instead of --data: a dataset's own files (fashion-mnist, cifar10, …), preprocessed as the model's metadata says.",
    ),
]
SplitOption = Annotated[
    str | None, typer.Option(help="--dataset split (default: test, or validation for speech-commands).")
]
DataDirOption = Annotated[Path | None, typer.Option(help="--dataset: folder with its official files.")]
LimitOption = Annotated[int | None, typer.Option(help="Use N samples only (see --limit-mode).", min=1)]


class LimitMode(str, Enum):
    stratified = "stratified"
    first = "first"


LimitModeOption = Annotated[
    LimitMode,
    typer.Option(help="--limit: stratified (every class its share, seeded; default) or first (the first N)."),
]


FeedOption = Annotated[
    list[str] | None,
    typer.Option(
        "--feed",
        help="A constant for an input that is not data: NAME=NUMBER or NAME=FILE.npy (a state, a sample rate; "
        "repeated over the batch where the input has one). Repeat for several inputs.",
    ),
]
METRIC_HELP = ("top1 (classes on the last axis) · binary (sigmoid output, threshold 0.5) · per-position "
               "([N, …, K] outputs) · module:function or file.py:function (a plug-in; docs/guide.md 'Metrics').")  # fmt: skip
MetricTimeoutOption = Annotated[
    float | None,
    typer.Option(help="Seconds a plug-in metric may take on one batch (default 60); longer ends the command with one line."),
]


class Granularity(str, Enum):
    layer = "layer"
    op = "op"


GranularityOption = Annotated[
    Granularity,
    typer.Option(
        help="Points per layer (a compute layer or a whole activation / normalisation function, however many ops "
        "it was exported as) or per op. The paper's models give the same points either way."
    ),
]


class SigmaScale(str, Enum):
    absolute = "absolute"
    std = "std"


OutputOption = Annotated[
    str | None, typer.Option("--graph-output", help="Graph output to score (default: the first float output).")
]


def progress_bar() -> Progress:
    """A Rich progress bar on stderr (stdout stays clean for tables and JSON)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err,
    )  # fmt: skip
