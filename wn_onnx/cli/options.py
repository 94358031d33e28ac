"""Option groups: the options several commands share, declared once.

A command names a group as one parameter (``data: DataArgs``); :func:`grouped` shows Typer the
group's options in its place and hands the command one object. Options a user did not give are
None, so a command can tell them from defaults (``check`` takes those from its TOML config), and
:meth:`ScanArgs.overrides` passes only what was given to :class:`wn_onnx.ScanConfig`, whose
defaults are the ones the help texts state.
"""

from __future__ import annotations

import copy
import functools
import inspect
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, get_args, get_type_hints

import typer

from wn_onnx.cli.common import (
    METRIC_HELP,
    NOISE_HELP,
    ON_HELP,
    AdcBitsOption,
    AtOption,
    CompensationOption,
    DacBitsOption,
    DataDirOption,
    DataOption,
    DatasetOption,
    Device,
    DriftScaleOption,
    Estimator,
    FeedOption,
    FormatOption,
    GMaxOption,
    Granularity,
    LabelsOption,
    LevelsOption,
    LimitModeOption,
    LimitOption,
    MemoryOption,
    MetricTimeoutOption,
    Mode,
    OrderOption,
    OutNoiseOption,
    PercentileOption,
    PerTensorOption,
    ProgScaleOption,
    ReadNoiseOption,
    ReadScaleOption,
    SigmaAddOption,
    SigmaMulOption,
    SigmaRatioOption,
    SigmaScale,
    SplitOption,
    Target,
    WeightScaleOption,
)
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_PARALLEL, MAX_REPEATS, MAX_SEED


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def given(group: object) -> dict[str, Any]:
    """The options of ``group`` the user gave (enums as their values)."""
    return {f.name: _plain(getattr(group, f.name)) for f in fields(group) if getattr(group, f.name) is not None}


@dataclass
class DataArgs:
    """Where the evaluation data come from and how they are scored."""

    PANEL = "Data"

    data: DataOption = None
    labels: LabelsOption = None
    dataset: DatasetOption = None
    split: SplitOption = None
    data_dir: DataDirOption = None
    feed: FeedOption = None
    limit: LimitOption = None
    limit_mode: LimitModeOption = None
    metric: Annotated[str | None, typer.Option(help=f"{METRIC_HELP} Default top1 (plan: the report's).")] = None
    metric_timeout: MetricTimeoutOption = None
    batch_size: Annotated[int | None, typer.Option(help="Samples per onnxruntime batch (default 1024).", min=1)] = None
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime intra-op threads (0: its default).", min=0, max=MAX_PARALLEL)
    ] = None
    memory: MemoryOption = None

    def source(self) -> dict[str, Any]:
        """What :func:`wn_onnx.api.load_data` takes from these options."""
        if self.labels is not None and self.data is None:
            raise WnError("--labels goes with --data X.npy: give the inputs too")
        return {"data": self.data if self.labels is None else (self.data, self.labels), "dataset": self.dataset,
                "split": self.split, "data_dir": self.data_dir, "feeds": self.feed}  # fmt: skip

    def read(self, loaded: Any, config: Any = None) -> Any:
        """The data these options name, read for ``loaded`` as ``config`` says (its limit, limit mode,
        label-free switch; default: a configuration of these options alone)."""
        from wn_onnx import api

        config = config or api.scan_config(**self.scan_settings())
        return api.load_data(loaded, **self.source(), limit=config.limit, limit_mode=config.limit_mode,
                             label_free=config.label_free)  # fmt: skip

    def scan_settings(self) -> dict[str, Any]:
        """The scan settings among these options that were given."""
        keys = ("feed", "limit", "limit_mode", "metric", "metric_timeout", "batch_size", "threads", "memory")
        out = {k: v for k, v in given(self).items() if k in keys}
        if "feed" in out:
            out["feeds"] = out.pop("feed")
        return out


@dataclass
class NoiseArgs:
    """The noise model and its options, and the strength grid."""

    PANEL = "Noise"

    noise: Annotated[str | None, typer.Option(help=f"{NOISE_HELP} Default add.")] = None
    on: Annotated[Target | None, typer.Option(help=f"{ON_HELP} Default activations.")] = None
    levels: LevelsOption = None
    order: OrderOption = None
    sigma_ratio: SigmaRatioOption = None
    sigma_mul: SigmaMulOption = None
    sigma_add: SigmaAddOption = None
    weight_scale: WeightScaleOption = None
    per_tensor: PerTensorOption = None
    percentile: PercentileOption = None
    fmt: FormatOption = None
    g_max: GMaxOption = None
    prog_scale: ProgScaleOption = None
    drift_scale: DriftScaleOption = None
    read_scale: ReadScaleOption = None
    compensation: CompensationOption = None
    read_noise: ReadNoiseOption = None
    dac_bits: DacBitsOption = None
    adc_bits: AdcBitsOption = None
    out_noise: OutNoiseOption = None

    def options(self, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """The noise model's options (``defaults``, e.g. a TOML config's, under the given ones)."""
        keys = {"order": "order", "sigma_ratio": "ratio", "sigma_mul": "sigma_mul", "sigma_add": "sigma_add",
                "weight_scale": "weight_scale", "per_tensor": "per_tensor", "percentile": "percentile", "fmt": "format",
                "g_max": "g_max", "prog_scale": "prog_scale", "drift_scale": "drift_scale", "read_scale": "read_scale",
                "compensation": "compensation", "read_noise": "read_noise"}  # fmt: skip
        values = {**(defaults or {}), **given(self)}
        return {option: values.get(name) for name, option in keys.items()}

    def scan_settings(self, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """``noise`` (the model built from its options), ``on``, ``levels``, ``converters``."""
        from wn_onnx.api import Converters, make_noise

        values = {**(defaults or {}), **given(self)}
        out: dict[str, Any] = {"noise": make_noise(values.get("noise", "add"), **self.options(defaults))}
        if "on" in values:
            out["on"] = values["on"]
        if values.get("levels", values.get("sigmas")) is not None:
            out["levels"] = values.get("levels", values.get("sigmas"))
        if any(values.get(k) is not None for k in ("dac_bits", "adc_bits", "out_noise")):
            out["converters"] = Converters(values.get("dac_bits"), values.get("adc_bits"), values.get("out_noise") or 0.0)
        return out


@dataclass
class ScanArgs:
    """How the strengths are swept, at which points, where."""

    PANEL = "Sweep"

    mode: Annotated[
        Mode | None, typer.Option(help="walking: one point at a time · global: all selected points · both (default).")
    ] = None
    at: AtOption = None
    repeats: Annotated[
        int | None, typer.Option(help="Independent noise draws per σ (default 5; 10 on weights).", min=1, max=MAX_REPEATS)
    ] = None
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of every noise draw (default 0): same inputs + seed → identical report.", min=0, max=MAX_SEED),
    ] = None
    label_free: Annotated[
        bool | None,
        typer.Option("--label-free/--labelled", help="Score agreement with the clean model's predictions instead of labels."),
    ] = None
    redraw: Annotated[bool | None, typer.Option(help="Fresh noise for every σ instead of one draw reused across σ.")] = None
    global_skip_bn: Annotated[
        bool | None, typer.Option(help="Global sweep: no noise after BatchNormalization (the paper's Table 1 setting).")
    ] = None
    adaptive: Annotated[
        bool | None, typer.Option(help="Measure a coarse part of the grid, then refine around each drop until μ is precise.")
    ] = None
    tolerance: Annotated[
        float | None, typer.Option(help="--adaptive and --estimator sequential stop once μ_err ≤ tolerance·μ (default 0.05).")
    ] = None
    estimator: Annotated[
        Estimator | None,
        typer.Option(help="grid: every σ on every sample (default) · sequential: few samples at the σ that tell most about μ."),
    ] = None
    granularity: Annotated[
        Granularity | None,
        typer.Option(help="Points per layer (a compute layer or a whole activation / normalisation function; default) "
                     "or per op. The paper's models give the same points either way."),
    ] = None  # fmt: skip
    sigma_scale: Annotated[
        SigmaScale | None,
        typer.Option(help="absolute: σ as given (the paper's; default) · std: σ in units of each point's clean activation std."),
    ] = None
    device: Annotated[Device | None, typer.Option(help="Execution provider (default cpu).")] = None
    jobs: Annotated[int | None, typer.Option(help="Walk points in this many processes.", min=1, max=MAX_PARALLEL)] = None
    workers: Annotated[
        int | None,
        typer.Option(help="Walk points (and global σ chunks) on a local Dask cluster of N worker processes.", min=0,
                     max=MAX_PARALLEL),
    ] = None  # fmt: skip
    scheduler: Annotated[
        str | None, typer.Option(help="… or on the Dask cluster of this scheduler (tcp://host:8786).")
    ] = None

    def scan_settings(self) -> dict[str, Any]:
        out = given(self)
        if "global_skip_bn" in out:
            out["global_after_bn"] = not out.pop("global_skip_bn")
        return out


GROUPS = (DataArgs, NoiseArgs, ScanArgs)


def grouped(command):
    """``command`` with each parameter typed as an option group replaced by the group's options
    (Typer reads the signature); the command receives the group object."""
    hints = get_type_hints(command, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for name, param in inspect.signature(command).parameters.items():
        kind = hints.get(name)
        if kind in GROUPS:
            groups[name] = kind
            inner = get_type_hints(kind, include_extras=True)
            params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                         annotation=_in_panel(inner[f.name], kind.PANEL)) for f in fields(kind)]  # fmt: skip
        else:
            params.append(param.replace(annotation=hints.get(name, param.annotation), kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        for name, kind in groups.items():
            values[name] = kind(**{f.name: values.pop(f.name) for f in fields(kind)})
        return command(**values)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _in_panel(annotation: Any, panel: str) -> Any:
    """``annotation`` with its Typer option shown under the help panel ``panel`` (a copy: the
    declaration is shared by every command)."""
    kind, *extras = get_args(annotation)
    return Annotated[(kind, *(_panelled(e, panel) for e in extras))]


def _panelled(extra: Any, panel: str) -> Any:
    if isinstance(extra, typer.models.OptionInfo):
        extra = copy.copy(extra)
        extra.rich_help_panel = panel
    return extra


ModelArgument = Annotated[
    Path | None, typer.Argument(help="ONNX model; omitted: the embedded digits MLP and its test split.")
]
