"""What the commands share: option enums, consoles, progress bars, JSON output."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from wn_onnx.errors import WnError
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


def noise_spec(kind: Kind | str, order: Order | str | None = None, ratio: float | None = None,
               sigma_mul: float | None = None, sigma_add: float | None = None):  # fmt: skip
    """The :class:`~wn_onnx.noise.NoiseSpec` the noise options describe (enum or plain values)."""
    from wn_onnx.noise import NoiseSpec

    def value(v):
        return v.value if isinstance(v, Enum) else v

    return NoiseSpec(value(kind), value(order), ratio, sigma_mul, sigma_add)


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
NoiseOption = Annotated[str, typer.Option(help=NOISE_HELP)]
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
    float | None, typer.Option(help="Weights: noise σ on each analog layer's output, relative to its range.")
]


def converters(dac_bits: int | None, adc_bits: int | None, out_noise: float | None):
    """The converter settings the options describe (None when none is given)."""
    from wn_onnx.noise import Converters

    if dac_bits is None and adc_bits is None and out_noise is None:
        return None
    return Converters(dac_bits, adc_bits, 0.0 if out_noise is None else out_noise)


def noise_model(name: str, **options: object):
    """The noise model (:func:`wn_onnx.noise.make_noise`) the noise options describe (enums as their values)."""
    from wn_onnx.noise import make_noise

    return make_noise(name, **{k: v.value if isinstance(v, Enum) else v for k, v in options.items()})


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
BatchSizeOption = Annotated[int, typer.Option(help="Samples per onnxruntime batch.", min=1)]
ThreadsOption = Annotated[
    int, typer.Option(help="onnxruntime intra-op threads (0: its default).", min=0, max=MAX_THREADS)
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
MetricOption = Annotated[str, typer.Option(help=METRIC_HELP)]
MetricTimeoutOption = Annotated[
    float | None,
    typer.Option(help="Seconds a plug-in metric may take on one batch (default 60); longer ends the command with one line."),
]


def load_data(
    loaded, data: Path | None, dataset_name: str | None, split: str | None, data_dir: Path | None,
    limit: int | None, limit_mode: LimitMode = LimitMode.stratified, require_labels: bool = True,
    feeds: list[str] | None = None,
    labels: Path | None = None,
):  # fmt: skip
    """Evaluation data from ``--data FILE.npz`` (one array per graph input, or ``x``; or streamed:
    a .npy with ``labels``, a folder of .npy files or of .npz shards) or ``--dataset NAME``
    (normalised as ``loaded``'s metadata says), inputs that are not data given by ``--feed``,
    checked against the model's inputs — as every command that runs a model takes it."""
    from wn_onnx.io.data import check_shape, data_inputs, load_npz, load_streamed, parse_feeds
    from wn_onnx.io.safeio import regular_file

    fed = parse_feeds(feeds)
    names = data_inputs(loaded, fed)
    if dataset_name:
        from wn_onnx.io.datasets import model_ready

        dataset = model_ready(loaded.model, dataset_name, split, data_dir, limit, limit_mode.value)
    elif data is None:
        raise WnError("give --data FILE.npz with arrays x (model inputs) and y (labels), or --dataset NAME")
    elif data.suffix == ".npy" or data.is_dir():
        dataset = load_streamed(data, labels, limit, require_labels, limit_mode.value, names or (loaded.input_name,), tuple(fed))
    else:
        regular_file(data, "data file")  # /dev/zero is named as what it is, before the options are matched
        if labels is not None:
            raise WnError("--labels goes with --data X.npy (an .npz carries its own y)")
        dataset = load_npz(data, limit, require_labels, limit_mode.value, names, tuple(fed))
    return check_shape(dataset, loaded, fed)


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


def memory_bytes(text: str | None) -> int | None:
    """``--memory`` in bytes (None: the default budget, see wn_onnx.engine.memory)."""
    from wn_onnx.engine.memory import parse_size

    return None if text is None else parse_size(text)


OutputOption = Annotated[
    str | None, typer.Option("--graph-output", help="Graph output to score (default: the first float output).")
]


def progress_bar() -> Progress:
    """A Rich progress bar on stderr (stdout stays clean for tables and JSON)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err,
    )  # fmt: skip
