"""One scan configuration: the API, the command line and the CI gate build the same ScanConfig, with
the same checks, and read their shared options the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import wn

import wn_onnx
from wn_onnx.cli.app import app
from wn_onnx.cli.options import DataArgs
from wn_onnx.errors import ConfigError
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL

FAST = {"levels": "log:1e-1:1e2:7", "repeats": 2}


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"threads": 1000}, "threads must lie in"),
        ({"seed": -1}, "seed must lie in"),
        ({"repeats": 0}, "repeats must lie in"),
        ({"workers": 10_000}, "workers must lie in"),
        ({"limit": 0}, "limit must lie in"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"mode": "sideways"}, "unknown scan mode"),
        ({"device": "tpu"}, "unknown device"),
        ({"noise": "pcm"}, "acts on weights, not on activations"),
        ({"on": "weights", "repeats": 1, "noise": "mul"}, "one repeat cannot tell"),
        ({"estimator": "sequential", "adaptive": True}, "exclude each other"),
        ({"sigma_scale": "std", "noise": "mul"}, "additive noise on activations"),
        ({"memory": "lots"}, "size"),
    ],
)
def test_a_bad_setting_is_one_config_error_where_it_is_made(settings, said):
    with pytest.raises(ConfigError, match=said):
        wn_onnx.ScanConfig(**settings)


def test_overrides_are_checked_like_a_new_configuration():
    config = wn_onnx.ScanConfig(noise="quant", levels="lin:2:8:7")
    assert config.replace(seed=4).sigmas.tolist() == config.sigmas.tolist() == [2.0**-b for b in range(8, 1, -1)]
    with pytest.raises(ConfigError, match="unknown scan setting 'colour'"):
        config.replace(colour="red")
    with pytest.raises(ConfigError, match="threads must lie in"):
        config.replace(threads=-1)


def test_scan_with_a_config_and_overrides_equals_scan_with_keywords():
    config = wn_onnx.ScanConfig(noise="mul", at="8-10", mode="walking", **FAST)
    a = wn_onnx.scan(None, None, config, seed=3).to_json()
    b = wn_onnx.scan(noise="mul", at="8-10", mode="walking", seed=3, **FAST).to_json()
    assert a == b and a["seed"] == 3 and [p["index"] for p in a["points"]] == [8, 9, 10]


def test_the_cli_report_equals_the_api_report(tmp_path):
    out = tmp_path / "r.json"
    res = wn("scan", "--noise", "mul", "--at", "8-10", "--mode", "walking", "--levels", FAST["levels"], "--repeats", "2",
             "--seed", "3", "--out", out, "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    api = wn_onnx.scan(noise="mul", at="8-10", mode="walking", seed=3, **FAST).to_json()
    assert json.loads(out.read_text()) == api


def test_check_reads_labels_from_a_file_as_every_command_does(tmp_path):
    data = np.load(DEFAULT_DATA)
    np.save(tmp_path / "x.npy", data["x"])
    np.save(tmp_path / "y.npy", data["y"])
    args = ["--levels", FAST["levels"], "--repeats", "2", "--mode", "global"]
    res = wn("check", DEFAULT_MODEL, "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--min-mu", "0.01", *args)
    assert res.returncode == 0, res.stderr
    free = wn("check", DEFAULT_MODEL, "--data", tmp_path / "x.npy", "--label-free", "--min-mu", "0.01", *args)
    assert free.returncode == 0, free.stderr
    bad = wn("check", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--labels", tmp_path / "y.npy", "--min-mu", "0.01", *args)
    assert bad.returncode == 2 and "a labels file goes with inputs streamed from a .npy" in bad.stderr


def test_a_config_pattern_selects_points_as_at_does(tmp_path):
    """``"1" = 3.0`` is point 1, not a regular expression that also matches tensors with a 1 in
    their names; regular expressions need ``re:``."""
    (tmp_path / "wn-onnx.toml").write_text('[points]\n"1" = 100.0\n')
    res = wn("check", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--levels", FAST["levels"], "--repeats", "2", "--mode",
             "walking", "--at", "0-10", "--out", tmp_path / "c.json", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 1, res.stderr
    verdicts = json.loads((tmp_path / "c.json").read_text())["verdicts"]
    assert [v["name"].split(" (")[0] for v in verdicts if not v["passed"]] == ["point 1"]
    assert len(verdicts) == 1  # no floor for the others: nothing else to judge


def _options(*command: str) -> dict[str, tuple]:
    """The options of a command: name → (help, default)."""
    import typer

    group = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]
    return {p.name: (p.help, p.default) for p in group.params}


def test_the_data_options_are_one_declaration_in_every_command():
    shared = {f.name for f in DataArgs.__dataclass_fields__.values()}
    commands = [("scan",), ("check",), ("plan",), ("analyze", "binarize"), ("analyze", "mixed")]
    seen = [_options(*c) for c in commands]
    for name in shared:
        assert len({o[name] for o in seen}) == 1, name  # the same help and default everywhere
    assert "log🅰" not in str(_options("analyze", "mixed")) and "sigma_mul_grid" in _options("analyze", "mixed")


def test_plan_is_a_dataclass_whose_json_is_the_cli_plan(tmp_path):
    report = wn_onnx.scan(mode="both", **FAST)
    plan = wn_onnx.plan(report, budget=22)
    assert isinstance(plan, wn_onnx.Plan) and sum(plan.executions) == 22
    path = tmp_path / "r.json"
    report.save(path)
    res = wn("plan", path, "--budget", "22", "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == plan.to_json()
    verdicts = wn_onnx.check(report, min_mu=0.01)
    assert all(isinstance(v, wn_onnx.Verdict) for v in verdicts) and verdicts[0].to_json()["name"] == verdicts[0].name


def test_weight_noise_keeps_its_own_default_repeats_through_overrides():
    """10 repeats on weights unless given: a configuration made for activations and switched to
    weights by an override (the command line's way) does not keep the activations' 5."""
    assert wn_onnx.ScanConfig().replace(on="weights").repeats == 10
    assert wn_onnx.ScanConfig(repeats=3).replace(on="weights").repeats == 3
    report = wn_onnx.scan(on="weights", noise="mul", levels="0.1,1", mode="walking", at="0")
    assert report.repeats == 10


def test_check_patterns_are_read_before_the_scan_and_unscanned_indices_match_nothing(tmp_path):
    (tmp_path / "wn-onnx.toml").write_text('[points]\n"Relu" = 0.5\n')
    res = wn("check", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--min-mu", "0.01", cwd=tmp_path)
    assert res.returncode == 2 and "point selection 'Relu'" in res.stderr and "re:PATTERN" in res.stderr
    (tmp_path / "wn-onnx.toml").write_text('at = "0-3"\n[points]\n"5" = 100.0\n')
    res = wn("check", DEFAULT_MODEL, "--data", DEFAULT_DATA, "--min-mu", "0.01", "--levels", FAST["levels"], "--repeats",
             "2", "--mode", "walking", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr  # point 5 was not scanned: its floor judges nothing


def test_data_already_read_and_the_old_labels_switch_are_named():
    data = wn_onnx.load_data(wn_onnx.DEFAULT_MODEL, wn_onnx.DEFAULT_DATA)
    with pytest.raises(ConfigError, match="pass limit to load_data"):
        wn_onnx.scan(wn_onnx.DEFAULT_MODEL, data, limit=50)
    with pytest.raises(ConfigError, match="label_free=True"):
        wn_onnx.load_data(wn_onnx.DEFAULT_MODEL, wn_onnx.DEFAULT_DATA, labels=False)
    with pytest.raises(ConfigError, match="levels and sigmas"):
        wn_onnx.scan(levels="0.1,1", sigmas="0.1,1")
    res = wn("scan", DEFAULT_MODEL, "--labels", DEFAULT_DATA)
    assert res.returncode == 2 and "--labels goes with --data X.npy" in res.stderr


def test_an_array_written_into_a_streamed_data_folder_is_refused(tmp_path):
    data = np.load(DEFAULT_DATA)
    np.save(tmp_path / "x.npy", data["x"])
    np.save(tmp_path / "y.npy", data["y"])
    res = wn("scan", DEFAULT_MODEL, "--data", tmp_path, "--out", tmp_path / "y.npy")
    assert res.returncode == 2 and "lies in the input folder" in res.stderr
    res = wn("scan", DEFAULT_MODEL, "--data", tmp_path, "--out", tmp_path / "shard.npz")
    assert res.returncode == 2 and "lies in the input folder" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]
    res = wn("scan", DEFAULT_MODEL, "--data", tmp_path, "--levels", FAST["levels"], "--repeats", "2", "--mode", "global",
             "--out", tmp_path / "r.json")  # fmt: skip
    assert res.returncode == 0, res.stderr  # a report beside the data it was made from


def test_a_mixed_map_on_weights_takes_one_repeat(tmp_path):
    res = wn("analyze", "mixed", DEFAULT_MODEL, "--at", "1", "--data", DEFAULT_DATA, "--on", "weights", "--repeats", "1",
             "--sigma-mul-grid", "0.1,1", "--sigma-add-grid", "0.1,1", "--limit", "40", "--out", tmp_path / "m.json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "m.json").read_text())["grids"][0]["on"] == "weights"


def test_the_api_names_a_strategy_it_does_not_know():
    report = wn_onnx.scan(**FAST)
    with pytest.raises(wn_onnx.WnError, match="unknown strategy 'foo'"):
        wn_onnx.plan(report, 22, evaluate=["foo"], model=wn_onnx.DEFAULT_MODEL, data=wn_onnx.DEFAULT_DATA)
