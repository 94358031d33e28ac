"""``wn-onnx check``: the CI gate. Exit 0 pass, 1 policy failed, 2 usage or input error."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from wn_onnx import api
from wn_onnx.cli.common import OutputOption, err
from wn_onnx.cli.options import DataArgs, NoiseArgs, ScanArgs, given, grouped
from wn_onnx.errors import WnError
from wn_onnx.io.safeio import guard_outputs, write_json, write_text

SCAN_KEYS = ("repeats", "seed", "mode", "at", "label_free", "limit", "metric", "batch_size", "estimator", "tolerance", "device")


@grouped
def check_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model to gate.")],
    data: DataArgs = None,
    noise: NoiseArgs = None,
    how: ScanArgs = None,
    config: Annotated[
        Path | None,
        typer.Option(help="wn-onnx.toml or pyproject.toml ([tool.wn-onnx]); found in the working folder by default."),
    ] = None,
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
) -> None:
    """Fail CI when a model's robustness falls below a floor or drops against a baseline."""
    outputs = [junit_path, summary, out_path]
    found = [config] if config is not None else [Path("wn-onnx.toml"), Path("pyproject.toml")]  # the config read
    guard_outputs(outputs, [model, data.data, data.labels, baseline, *found])
    try:
        verdicts = _run(model, data, noise, how, api.check_config(config), min_mu, global_min_mu, baseline, max_mu_drop,
                        outputs, output)  # fmt: skip
    except WnError as e:
        if junit_path:
            with contextlib.suppress(WnError):  # the error itself is what the user must see
                write_text(junit_path, api.junit([], {}, error=str(e)))
        raise
    sys.exit(1 if any(not v.passed for v in verdicts) else 0)


def _run(model: Path, data: DataArgs, noise: NoiseArgs, how: ScanArgs, conf: dict, min_mu: str | None,
         global_min_mu: str | None, baseline: Path | None, max_mu_drop: str | None, outputs: list, output: str | None):  # fmt: skip
    """The scan with the command line's settings over the config's, then the verdicts, written where asked."""
    junit_path, summary, out_path = outputs
    settings = {**{k: v for k, v in conf.items() if k in SCAN_KEYS}, **data.scan_settings(), **how.scan_settings()}
    if "feed" in conf and "feeds" not in settings:
        settings["feeds"] = [conf["feed"]] if isinstance(conf["feed"], str) else conf["feed"]
    config = api.scan_config(**noise.scan_settings(conf), **settings)
    floors = {"min_mu": min_mu if min_mu is not None else conf.get("min_mu"),
              "global_min_mu": global_min_mu if global_min_mu is not None else conf.get("global_min_mu")}  # fmt: skip
    for value in floors.values():
        if value is not None:
            config.spec.levels(str(value))  # a floor the axis cannot read fails before the scan
    source = {**data.source(), **{k: conf[k] for k in ("data", "dataset") if k in conf and not given(data).get(k)}}
    if source.get("data") is None and source.get("dataset") is None:
        raise WnError("give --data FILE.npz or --dataset NAME")
    base_path = baseline or conf.get("baseline")
    data_files = source["data"] if isinstance(source.get("data"), tuple) else (source.get("data"),)  # the config's too
    guard_outputs(outputs, [base_path, *data_files])
    base = None if base_path is None else api.read_report(base_path, walked=True)
    drop = max_mu_drop if max_mu_drop is not None else conf.get("max_mu_drop")
    if drop is not None and base is None:
        raise WnError("--max-mu-drop needs --baseline REPORT")
    loaded = api.load_model(model, output or conf.get("output"))
    dataset = api.load_data(loaded, **{**source, "feeds": config.feeds}, limit=config.limit, limit_mode=config.limit_mode,
                            label_free=config.label_free)  # fmt: skip
    report = api.scan(loaded, dataset, config).to_json()
    verdicts = api.check(report, **floors, baseline=base, max_drop=drop, point_floors=list(conf.get("points", {}).items()))
    text = api.markdown(verdicts, report)
    if summary:
        write_text(summary, text)
    else:
        print(text)
    if junit_path:
        write_text(junit_path, api.junit(verdicts, report))
    if out_path:
        write_json(out_path, {**report, "verdicts": [v.to_json() for v in verdicts]})
    if any(not v.passed for v in verdicts):
        err.print(f"wn-onnx check failed: {sum(not v.passed for v in verdicts)} of {len(verdicts)} checks")
    return verdicts
