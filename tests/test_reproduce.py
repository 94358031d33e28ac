"""benchmarks/reproduce.py end to end (--quick, on a small synthetic Fashion-MNIST folder): it stores
every result, resumes without recomputing, and writes docs/reproduction.md's tables from the store."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fake_fashion_mnist(folder: Path) -> Path:
    """An easy stand-in in the loader's file layout: two classes (0 dark, 1 bright) out of the ten
    outputs, so even a network trained a few steps is well above chance (a scan needs a drop)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for prefix, n in (("train", 1000), ("t10k", 400)):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 28, 28)) + 150 * y[:, None, None]
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


def _reproduce(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)  # fmt: skip


def _module():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _row(doc: str, start: str) -> str:
    return next(line for line in doc.splitlines() if line.startswith(start))


def _mul_row(doc: str) -> str:
    """Table 4's row of the MLP with BN under multiplicative noise."""
    return next(line for line in doc.splitlines() if line.startswith("| MLP | yes | 1 |") and "| mul |" in line)


@pytest.mark.slow
def test_quick_run_stores_resumes_and_documents_from_the_store(tmp_path):
    data = _fake_fashion_mnist(tmp_path / "fmnist")
    store, doc = tmp_path / "store", tmp_path / "docs" / "reproduction.md"
    ran = _reproduce("--quick", "--out-dir", store, "--doc", doc, "--data-dir", data)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "FAILED" not in ran.stdout
    for kind in ("train", "scan", "plan"):
        assert list((store / kind).glob("*.json")), kind
    text = doc.read_text()
    for heading in ("## Table 4", "## Table 3", "## Fig. 2", "## Fig. 3", "## The multiplicative excess",
                    "## How these results were made"):  # fmt: skip
        assert heading in text, heading
    for png in ("fig2_walking_additive.png", "fig3_multiplicative_bn.png", "global_multiplicative_curves.png"):
        assert (doc.parent / "reproduction" / png).stat().st_size > 1000, png
        assert f"(reproduction/{png})" in text
    assert "--quick" in _row(text, "- `python benchmarks/reproduce.py")  # the command that made them

    # resumable: a second run finds every result stored and computes nothing
    again = _reproduce("--quick", "--out-dir", store, "--doc", doc, "--data-dir", data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not re.search(r"\] (train|scan|plan) ", again.stdout), again.stdout

    # the tables are read from the store: alter a stored μ and a stored plan accuracy, regenerate
    reproduce = _module()
    prof = reproduce.Profile.quick()
    key = reproduce.scan_key(prof, reproduce.train_key(prof, "mlp", True, prof.mlp_epochs), "mul")
    path = reproduce.Store(store).path("scan", reproduce.scan_name(key), key)
    record = json.loads(path.read_text())
    assert reproduce.fmt_mu(record["result"]["global"]) in _mul_row(text)
    record["result"]["global"].update(mu=0.123456, mu_err=0.0111, status="ok")
    path.write_text(json.dumps(record))
    pk = reproduce.train_key(prof, "mlp", False, prof.mlp_epochs, prof.seeds[0])
    sk = reproduce.fig2_key(prof, pk)
    plan_path = reproduce.Store(store).path("plan", reproduce.scan_name(sk), reproduce.plan_key(sk, prof.plan_repeats))
    plan = json.loads(plan_path.read_text())
    plan["result"]["evaluation"]["plans"]["uniform"].update(accuracy_mean=0.987654, accuracy_std=0.0)
    plan_path.write_text(json.dumps(plan))

    reproduce.write_doc(store, doc)
    text = doc.read_text()
    mul_row = _mul_row(text)
    assert "0.123 ± 0.011" in mul_row and mul_row.endswith("| 0.49 |"), mul_row  # 0.123456 / paper 0.25
    assert "| no | 0 |" in text and "98.8% ± 0.0%" in _row(text, "| no | 0 |")
    assert "0.123 ± 0.011" in _row(text, "| training length | MLP + BN, 1 epochs |")  # the excess table too
