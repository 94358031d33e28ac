"""What the tests share: the command line run in-process (``wn``) or as a real process
(``wn_process``, for signals and memory limits), and models exported from torch (built once per session)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wn_onnx.engine import Engine, SweepSettings
from wn_onnx.io.data import Dataset, make_dataset
from wn_onnx.scan_config import ScanConfig
from wn_onnx.training.export import export_onnx
from wn_onnx.training.nets import lenet5, mlp
from wn_onnx.training.trainer import History, TrainConfig, train


@dataclass
class Ran:
    """What a command did: the fields of :class:`subprocess.CompletedProcess` the tests read."""

    returncode: int
    stdout: str
    stderr: str


def wn(*args, cwd: Path | None = None, env: dict | None = None, columns: int = 80) -> Ran:
    """``wn-onnx ARGS`` in this process, through the console entry point (its error mapping and exit
    codes), with Typer's CliRunner isolating stdin/stdout/stderr and the environment; ``columns``
    is the terminal width. Much faster than a process per call; use :func:`wn_process` where a real
    process matters (signals, kill -9, memory limits, import-time behaviour)."""
    from typer.testing import CliRunner

    from wn_onnx.cli import common
    from wn_onnx.cli.app import run

    argv, here, widths = sys.argv, Path.cwd(), (common.out.width, common.err.width)
    with CliRunner().isolation(env=env) as (stdout, stderr, _), warnings.catch_warnings():
        warnings.simplefilter("default")  # a warning printed by a real process counts as a stderr line
        warnings.simplefilter("ignore", ResourceWarning)  # the test process's own garbage (pipes of earlier tests)
        warnings.showwarning = lambda message, category, *_a, **_k: sys.stderr.write(f"{category.__name__}: {message}\n")
        sys.argv = ["wn-onnx", *map(str, args)]
        common.out.width = common.err.width = columns
        try:
            if cwd is not None:
                os.chdir(cwd)
            run()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            sys.argv = argv
            os.chdir(here)
            common.out.width, common.err.width = widths
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            sys.stdout.flush()
            sys.stderr.flush()
        text = stdout.getvalue().decode(), stderr.getvalue().decode(errors="backslashreplace")
    return Ran(code, *text)


def like_a_shell() -> None:
    """``preexec_fn`` of a command started the way a terminal starts it: SIGINT and SIGTERM at
    their defaults and not blocked, whatever the test process (Dask, multiprocessing helpers)
    did to its own signal state, which children inherit."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def wn_process(
    *args, cwd: Path | None = None, env: dict | None = None, memory: int | None = None, timeout: float = 300
) -> Ran:
    """``python -m wn_onnx ARGS`` as a real process, optionally under an address-space limit of ``memory`` bytes."""

    def limit() -> None:
        like_a_shell()
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    res = subprocess.run([sys.executable, "-m", "wn_onnx", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, env=env, timeout=timeout, preexec_fn=limit)  # fmt: skip
    return Ran(res.returncode, res.stdout, res.stderr)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so they matter in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen))
    return model.eval()


class ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h) + h)
        return self.fc(h.mean(dim=(2, 3)))


class AttentionBlock(nn.Module):
    def __init__(self, dim: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 4.0, dim=-1)
        h = self.norm(x + att @ self.v(x))
        return self.head(h.mean(dim=1))


class DynamicReshapeMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.reshape(x.shape[0], -1))))


def _export_plain(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.randn(2, *shape),), str(path), dynamo=False, do_constant_folding=False,
            input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """name → (onnx path, sample shape) for the torch-exported models of the scan issue."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("zoo")
    models = {
        "mlp_bn": (randomize_bn(mlp(64, 10, bn=True)), (1, 8, 8)),
        "lenet5_bn": (randomize_bn(lenet5(3, 10, bn=True)), (3, 32, 32)),
        "residual_cnn": (randomize_bn(ResidualCNN()), (3, 12, 12)),
        "attention": (AttentionBlock(), (6, 16)),
        "dynamic_reshape_mlp": (DynamicReshapeMLP(), (3, 4, 4)),
    }
    out = {}
    for name, (model, shape) in models.items():
        if name in ("mlp_bn", "lenet5_bn"):
            out[name] = (export_onnx(model, shape, d / f"{name}.onnx"), shape)
        else:
            out[name] = (_export_plain(model, shape, d / f"{name}.onnx"), shape)
    return out


@pytest.fixture(scope="session")
def digits():
    """The embedded digits model and test split (trained, shipped in the package)."""
    from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL

    with np.load(DEFAULT_DATA) as f:
        return DEFAULT_MODEL, f["x"], f["y"]


def random_data(engine: Engine, shape: tuple[int, ...], n: int = 64, seed: int = 0) -> Dataset:
    """``n`` standard-normal samples of ``shape``, labelled with the clean model's own predictions."""
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
    return make_dataset(x, engine.clean_logits(x).argmax(axis=1), "random")


def config_of(st: SweepSettings, request: dict | None = None, **more: object) -> ScanConfig:
    """The scan configuration of engine sweep settings ``st`` and the scan ``request``'s settings
    (tests build sweeps at the engine's level: grids in the model's strengths)."""
    return ScanConfig(noise=st.spec, levels=st.spec.axis.level(st.sigmas), repeats=st.repeats, seed=st.seed,
                      batch_size=st.batch_size, redraw=st.redraw, walk=st.walk, metric=st.metric,
                      metric_timeout=st.metric_timeout, converters=st.converters, **(request or {}), **more)  # fmt: skip


def resumed_like_straight(cfg: TrainConfig, data: tuple, shape: tuple[int, ...], tmp_path: Path) -> History:
    """Train ``cfg`` straight through, and again stopped after epoch 2 and resumed from its
    checkpoint; assert the two end with identical weights and return the resumed run's history.
    ``data``: (x_train, y_train, x_val, y_val) with 10 classes."""
    x_train, y_train, x_val, y_val = data
    straight, _ = train(cfg, (x_train, y_train), (x_val, y_val), 10, shape)

    class Stop(Exception):
        pass

    def stop_after_two(stats: dict) -> None:
        if stats["epoch"] == 2:
            raise Stop

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Stop):
        train(cfg, (x_train, y_train), (x_val, y_val), 10, shape, checkpoint=ckpt, on_epoch=stop_after_two)
    resumed, history = train(cfg, (x_train, y_train), (x_val, y_val), 10, shape, checkpoint=ckpt, resume=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    return history
