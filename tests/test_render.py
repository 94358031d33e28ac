"""The terminal tables: 80 columns, names shortened in the middle, model strings never read as markup."""

from __future__ import annotations

from conftest import wn
from rich.console import Console

from wn_onnx.cli.render import points_table, report_table
from wn_onnx.results.names import shorten

LONG = "jax2tf_get_logits_fn_model/very_long_block_name_{i}/conv_{i}/Relu_output_{i}"


def curve(status: str = "ok", mu: float | None = 0.93) -> dict:
    return {"mu": mu, "mu_err": 0.05, "a_max": 0.9712, "a_min": 0.1, "status": status}


def synthetic_report() -> dict:
    points = [
        {"index": i, "tensor": LONG.format(i=i), "op_type": "BatchNormalization" if i % 3 else "Conv", "shape": ["N", 8],
         **curve("no-drop-from-start" if i == 2 else "ok")}
        for i in range(12)
    ]  # fmt: skip
    points[1]["tensor"] = "[/]r"
    points[4]["tensor"] = "[b]x[/b]"
    return {"schema_version": 1, "noise": {"kind": "add", "order": None}, "clean_accuracy": 0.9712, "data": {"samples": 40},
            "points": points, "global": {**curve(), "points": list(range(12))}}  # fmt: skip


def rendered(table) -> list[str]:
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_shorten_keeps_both_ends():
    assert shorten("abcdefghij", 10) == "abcdefghij"
    assert shorten("abcdefghijkl", 7) == "abc…jkl" and len(shorten("x" * 50, 13)) == 13


def test_report_table_fits_80_columns_and_shows_the_achieved_accuracy():
    report = synthetic_report()
    lines = rendered(report_table(report, 80))
    assert max(map(len, lines)) <= 80
    body = [line for line in lines if line.strip()[:2].strip().isdigit() or line.lstrip().startswith("all")]
    assert len(body) == 13  # one line per point and the global row: nothing folded onto a second line
    row = next(line for line in body if line.split()[0] == "5")
    assert "jax2tf" in row and "…" in row and row.split()[1].endswith("_5")  # shortened in the middle
    assert "0.971" in row and "1.000" not in row  # a_max as the report gives it
    header = "\n".join(lines[:4])
    assert "acc" in header and "max" in header
    assert any("[/]r" in line for line in lines) and any("[b]x[/b]" in line for line in lines)
    assert "no-drop-from-start" in "\n".join(lines)


def test_points_table_fits_and_escapes():
    report = synthetic_report()
    lines = rendered(points_table(report["points"], "noise points of [/]m.onnx", 80))
    assert max(map(len, lines)) <= 80 and "[/]m.onnx" in lines[0]
    assert sum("…" in line for line in lines) >= 10 and any(line.split()[1:2] == ["[/]r"] for line in lines)


def test_error_naming_a_markup_tensor_is_one_clean_line(tmp_path):
    """WnError messages quote tensor names; a name like ``[/]r`` is printed, not parsed as markup."""
    import json

    from wn_onnx.io.embedded import DEFAULT_MODEL

    report = synthetic_report()
    report.update(model=str(DEFAULT_MODEL), seed=0, num_classes=10, **{"global": None})
    for p in report["points"]:
        p.update(sigmas=[0.1], accuracy=[[1.0]])
    report["points"][0]["tensor"] = "[/]r"  # the first point the check compares
    (tmp_path / "r.json").write_text(json.dumps(report))
    res = wn("plan", tmp_path / "r.json", "--evaluate", "--model", DEFAULT_MODEL,
                          "--dataset", "digits", "--sigma", "1")  # fmt: skip
    assert res.returncode == 2 and "does not describe" in res.stderr and "[/]r" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
