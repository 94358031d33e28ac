"""``wn-onnx check``: the CI gate. Exit 0 pass, 1 policy failed, 2 usage or input error."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from wn_onnx.cli.common import (
    LEVELS_HELP,
    METRIC_HELP,
    NOISE_HELP,
    ON_HELP,
    AdcBitsOption,
    AtOption,
    CompensationOption,
    DacBitsOption,
    DataDirOption,
    DatasetOption,
    Device,
    DriftScaleOption,
    Estimator,
    FeedOption,
    FormatOption,
    GMaxOption,
    Granularity,
    GranularityOption,
    LimitMode,
    LimitModeOption,
    MemoryOption,
    MetricTimeoutOption,
    Mode,
    OrderOption,
    OutNoiseOption,
    OutputOption,
    PercentileOption,
    PerTensorOption,
    ProgScaleOption,
    ReadNoiseOption,
    ReadScaleOption,
    SigmaAddOption,
    SigmaMulOption,
    SigmaRatioOption,
    SplitOption,
    Target,
    ThreadsOption,
    WeightScaleOption,
    converters,
    err,
    load_data,
    memory_bytes,
    noise_model,
)
from wn_onnx.errors import WnError
from wn_onnx.io.config import MAX_REPEATS, MAX_SEED
from wn_onnx.io.safeio import guard_outputs, write_json, write_text


def check_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model to gate.")],
    data: Annotated[
        Path | None,
        typer.Option(help=".npz with x (and y unless --label-free); or streamed: a .npy, a folder of x.npy + y.npy or of .npz shards."),
    ] = None,
    dataset_name: DatasetOption = None,
    split: SplitOption = None,
    data_dir: DataDirOption = None,
    feed: FeedOption = None,
    metric: Annotated[str | None, typer.Option(help=f"{METRIC_HELP} Default top1.")] = None,
    metric_timeout: MetricTimeoutOption = None,
    config: Annotated[
        Path | None,
        typer.Option(help="wn-onnx.toml or pyproject.toml ([tool.wn-onnx]); found in the working folder by default."),
    ] = None,
    noise: Annotated[str | None, typer.Option(help=f"{NOISE_HELP} Default add.")] = None,
    on: Annotated[Target | None, typer.Option(help=f"{ON_HELP} Default activations.")] = None,
    order: OrderOption = None,
    sigma_ratio: SigmaRatioOption = None,
    sigma_mul: SigmaMulOption = None,
    sigma_add: SigmaAddOption = None,
    weight_scale: WeightScaleOption = None,
    per_tensor: PerTensorOption = False,
    percentile: PercentileOption = None,
    fmt: FormatOption = None,
    g_max: GMaxOption = None,
    prog_scale: ProgScaleOption = None,
    drift_scale: DriftScaleOption = None,
    read_scale: ReadScaleOption = None,
    compensation: CompensationOption = None,
    read_noise: ReadNoiseOption = None,
    dac_bits: DacBitsOption = None,
    adc_bits: AdcBitsOption = None,
    out_noise: OutNoiseOption = None,
    sigmas: Annotated[str | None, typer.Option("--levels", "--sigmas", help=LEVELS_HELP)] = None,
    mode: Annotated[Mode | None, typer.Option(help="walking, global or both (default both).")] = None,
    at: AtOption = None,
    repeats: Annotated[int | None, typer.Option(help="Noise draws per σ (default 5; 10 on weights).", min=1, max=MAX_REPEATS)] = None,
    seed: Annotated[int | None, typer.Option(help="Noise seed (default 0).", min=0, max=MAX_SEED)] = None,
    limit: Annotated[int | None, typer.Option(help="Use N samples only (see --limit-mode).", min=1)] = None,
    limit_mode: LimitModeOption = LimitMode.stratified,
    batch_size: Annotated[int | None, typer.Option(help="Samples per onnxruntime batch (default 1024).", min=1)] = None,
    threads: ThreadsOption = 0,
    label_free: Annotated[
        bool | None, typer.Option("--label-free/--labels", help="Agreement with the clean model instead of labels.")
    ] = None,
    estimator: Annotated[
        Estimator | None, typer.Option(help="grid (default) or sequential: few samples at the σ that tell most about μ.")
    ] = None,
    tolerance: Annotated[float | None, typer.Option(help="--estimator sequential: stop at μ_err ≤ tolerance·μ.")] = None,
    min_mu: Annotated[
        str | None,
        typer.Option(help="Every point and the global curve need μ ≥ this, in the model's unit (σ, error rate, "
                     "time: 3600 or 1h, 1y); for bits (quant, converters) the most bits a layer may need at μ."),
    ] = None,
    global_min_mu: Annotated[str | None, typer.Option(help="Floor for the global μ only (the same units).")] = None,
    baseline: Annotated[Path | None, typer.Option(help="Report of the last release to compare against.")] = None,
    max_mu_drop: Annotated[
        str | None, typer.Option(help="With --baseline: allowed μ drop beyond the fit error (20% or 0.2).")
    ] = None,
    junit_path: Annotated[Path | None, typer.Option("--junit", help="JUnit XML for CI dashboards.")] = None,
    summary: Annotated[Path | None, typer.Option(help="Markdown summary to this file instead of stdout.")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Full report plus verdicts as JSON.")] = None,
    output: OutputOption = None,
    device: Annotated[Device | None, typer.Option(help="Execution provider (default cpu).")] = None,
    granularity: GranularityOption = Granularity.layer,
    memory: MemoryOption = None,
) -> None:
    """Fail CI when a model's robustness falls below a floor or drops against a baseline."""
    guard_outputs([junit_path, summary, out_path], [model, data, config, baseline])
    try:
        verdicts, report = _run(**locals())
    except WnError as e:
        if junit_path:
            from wn_onnx.gate import junit

            with contextlib.suppress(WnError):  # the error itself is what the user must see
                write_text(junit_path, junit([], {}, error=str(e)))
        raise
    failed = [v for v in verdicts if not v.passed]
    sys.exit(1 if failed else 0)


def _run(model, data, dataset_name, split, data_dir, feed, metric, metric_timeout, config, noise, on, order, sigma_ratio, sigma_mul,
         sigma_add, weight_scale, per_tensor, percentile, fmt, g_max, prog_scale, drift_scale, read_scale, compensation,
         read_noise, dac_bits, adc_bits, out_noise, sigmas, mode, at, repeats, seed, limit, limit_mode, batch_size, threads, label_free, estimator, tolerance,
         min_mu, global_min_mu, baseline, max_mu_drop, junit_path, summary, out_path, output, device, granularity,
         memory):  # fmt: skip
    from wn_onnx.engine import SweepSettings
    from wn_onnx.gate import Policy, evaluate_policy, junit, load_config, markdown, parse_drop
    from wn_onnx.io.model import load_model
    from wn_onnx.metrics import get_metric
    from wn_onnx.noise import default_repeats
    from wn_onnx.planner import load_report
    from wn_onnx.scanner import ScanRequest, run_scan

    conf = load_config(config)

    def pick(cli, key, default=None):
        return cli if cli is not None else conf.get(key, default)

    spec = noise_model(pick(noise, "noise", "add"), order=pick(order and order.value, "order"),
                       ratio=pick(sigma_ratio, "sigma_ratio"), sigma_mul=pick(sigma_mul, "sigma_mul"),
                       sigma_add=pick(sigma_add, "sigma_add"), weight_scale=weight_scale, per_tensor=per_tensor,
                       percentile=percentile, format=fmt, g_max=g_max, prog_scale=prog_scale, drift_scale=drift_scale,
                       read_scale=read_scale, compensation=compensation, read_noise=read_noise)  # fmt: skip
    target = on.value if on is not None else conf.get("on", "activations")
    grid_text = pick(sigmas, "sigmas")
    grid = spec.levels(grid_text if isinstance(grid_text, str) or grid_text is None else ",".join(map(repr, grid_text)))
    free = bool(pick(label_free, "label_free", False))
    dataset_name = pick(dataset_name, "dataset")
    data = None if pick(data, "data") is None else Path(pick(data, "data"))
    if data is None and dataset_name is None:
        raise WnError("give --data FILE.npz or --dataset NAME")
    base_path = pick(baseline, "baseline")
    guard_outputs([junit_path, summary, out_path], [base_path])
    scoring = get_metric(pick(metric, "metric", "top1"), metric_timeout).name
    loaded = load_model(model, pick(output, "output"))
    feeds = feed if feed is not None else conf.get("feed")
    dataset = load_data(loaded, data, dataset_name, split, data_dir, pick(limit, "limit"), limit_mode, not free,
                        [feeds] if isinstance(feeds, str) else feeds)  # fmt: skip
    base_report = load_report(base_path) if base_path else None
    def floor(value: object, flag: str) -> float | None:
        """A floor in the model's levels (``1y`` on a time axis), checked against its range."""
        if value is None:
            return None
        levels = spec.levels(str(value))
        if levels.size != 1:
            raise WnError(f"{flag} takes one level, got {value!r}")
        return float(spec.axis.level(levels[0]))

    policy = Policy(floor(pick(min_mu, "min_mu"), "--min-mu"), floor(pick(global_min_mu, "global_min_mu"), "--global-min-mu"),
                    parse_drop(pick(max_mu_drop, "max_mu_drop")),
                    list(conf.get("points", {}).items()))  # fmt: skip
    if policy.max_drop is not None and base_report is None:
        raise WnError("--max-mu-drop needs --baseline REPORT")
    if base_report is not None and policy.max_drop is None:
        policy.max_drop = 0.0
    st = SweepSettings(grid, spec, int(pick(repeats, "repeats", default_repeats(target))), int(pick(seed, "seed", 0)),
                       int(pick(batch_size, "batch_size", 1024)), metric=scoring, metric_timeout=metric_timeout,
                       converters=converters(dac_bits, adc_bits, out_noise))  # fmt: skip
    req = ScanRequest(mode=mode.value if mode else conf.get("mode", "both"), at=pick(at, "at"), label_free=free,
                      device=Device(pick(device, "device", "cpu")).value, threads=threads,
                      granularity=granularity.value, memory=memory_bytes(memory), on=target,
                      tolerance=float(pick(tolerance, "tolerance", 0.05)),
                      estimator=estimator.value if estimator else conf.get("estimator", "grid"))  # fmt: skip
    report = run_scan(loaded, dataset, st, req)
    verdicts = evaluate_policy(report, policy, base_report)
    text = markdown(verdicts, report)
    if summary:
        write_text(summary, text)
    else:
        print(text)
    if junit_path:
        write_text(junit_path, junit(verdicts, report))
    if out_path:
        write_json(out_path, {**report, "verdicts": [v.__dict__ for v in verdicts]})
    if any(not v.passed for v in verdicts):
        err.print(f"wn-onnx check failed: {sum(not v.passed for v in verdicts)} of {len(verdicts)} checks")
    return verdicts, report
