"""The evaluator: cached-prefix walking equals the whole noisy graph, exactly one point is
active when walking and all when global, and accuracy agrees with an independent torch run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_data
from torch import nn

from wn_onnx.engine import Engine, SweepSettings, walking
from wn_onnx.engine.round_cache import RoundCache
from wn_onnx.graph_passes import find_points
from wn_onnx.io.data import load_npz, make_dataset
from wn_onnx.io.embedded import DEFAULT_DATA, DEFAULT_MODEL, digits_split
from wn_onnx.io.model import load_model
from wn_onnx.noise import NoiseSpec
from wn_onnx.training.export import export_onnx
from wn_onnx.training.trainer import TrainConfig, train


def quiet(_n: int) -> None:
    pass


@pytest.mark.parametrize("name", ["lenet5_bn", "residual_cnn", "attention", "dynamic_reshape_mlp"])
@pytest.mark.parametrize(
    "spec",
    [NoiseSpec("add"), NoiseSpec("mul"), NoiseSpec("mixed", "mul-first", ratio=0.3)],
    ids=["add", "mul", "mixed"],
)
def test_suffix_walk_equals_full_graph(zoo, name, spec):
    path, shape = zoo[name]
    loaded = load_model(path)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    points = find_points(loaded.model)
    data = random_data(engine, shape)
    st = SweepSettings(np.array([0.0, 0.05, 0.3, 2.0]), spec, repeats=2, batch_size=40)
    full = SweepSettings(**{**st.__dict__, "walk": "full"})
    for point in points:
        fast = engine.walk(point, data, st, quiet)
        ref = engine.walk(point, data, full, quiet, all_points=points)
        # Same seeded draws through both paths: the same predictions (fusions may move ~1e-7).
        assert np.abs(fast.correct - ref.correct).max() <= 1, (point, fast.correct, ref.correct)
    assert fast.total == len(data)


def test_stacking_sigmas_changes_nothing(zoo, monkeypatch):
    path, shape = zoo["lenet5_bn"]
    loaded = load_model(path)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    point = find_points(loaded.model)[9]
    data = random_data(engine, shape)
    st = SweepSettings(np.geomspace(0.01, 10, 7), NoiseSpec("mul"), repeats=2, batch_size=64)
    stacked = engine.walk(point, data, st, quiet)
    monkeypatch.setattr(walking, "CHUNK_ELEMENTS", 1)
    single = engine.walk(point, data, st, quiet)
    assert np.abs(stacked.correct - single.correct).max() <= 1


@pytest.mark.parametrize(
    "spec",
    [NoiseSpec("add"), NoiseSpec("mul"), NoiseSpec("mixed", "add-first", ratio=0.3)],
    ids=["add", "mul", "mixed"],
)
@pytest.mark.parametrize("ram, disk", [(1 << 30, 0), (0, 1 << 30), (0, 0)], ids=["memory", "disk", "recompute"])
def test_round_cache_gives_what_recomputation_gives(zoo, spec, ram, disk):
    """Adaptive rounds reuse cached activations and noise (chain-carried for add/mul at the input,
    plain draws for mixed): every tier must count exactly what a cache-free walk or global sweep
    counts."""
    path, shape = zoo["lenet5_bn"]
    loaded = load_model(path)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    data = random_data(engine, shape, n=80)
    rounds = [np.array([0.05, 2.0]), np.array([0.3]), np.array([0.0, 0.8])]
    for point in [find_points(loaded.model)[i] for i in (0, 6)]:
        with RoundCache(ram_bytes=ram, disk_bytes=disk) as cache:
            for sigmas in rounds:
                st = SweepSettings(sigmas, spec, repeats=2, batch_size=32)
                cached = engine.walk(point, data, st, quiet, cache=cache)
                plain = engine.walk(point, data, st, quiet)
                np.testing.assert_array_equal(cached.correct, plain.correct)
            draws = 3 * st.repeats  # one noise draw per (batch, repeat): stored once, reused in 2 rounds
            assert (cache.hits >= 2 * draws) if ram or disk else cache.hits == 0, cache.hits
            folder = cache._folder
            assert (folder is not None and len(list(folder.iterdir())) >= draws) == (disk > 0)
        assert folder is None or not folder.exists()
    with RoundCache(ram_bytes=ram, disk_bytes=disk) as cache:  # global sweeps keep every point's draws
        points = find_points(loaded.model)[::4]
        for sigmas in rounds:
            st = SweepSettings(sigmas, spec, repeats=2, batch_size=32)
            cached = engine.global_sweep(points, data, st, quiet, cache=cache)
            np.testing.assert_array_equal(cached.correct, engine.global_sweep(points, data, st, quiet).correct)
        assert (cache.hits == 2 * 3 * st.repeats) == bool(ram or disk), cache.hits


def test_graph_that_mixes_samples_is_not_stacked(tmp_path):
    """Dynamic quantization scales each tensor by its batch-wide range: a σ = 100 copy stacked
    next to σ = 0.01 would wreck the small σ's accuracy (it did: 11 % instead of 98.6 %). The
    probe must turn stacking off there, keep it where samples are independent, and the walk must
    then equal the whole-graph evaluation; the scales (scalars) are no points."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(DEFAULT_MODEL), str(tmp_path / "dyn.onnx"))
    data = load_npz(DEFAULT_DATA)
    st = SweepSettings(np.array([0.01, 0.1, 1.0, 10.0, 100.0]), NoiseSpec("add"), repeats=2)
    for path, mixes in ((tmp_path / "dyn.onnx", True), (DEFAULT_MODEL, False)):
        loaded = load_model(path)
        engine = Engine(loaded, ["CPUExecutionProvider"])
        points = find_points(loaded.model)
        assert all(p.shape != () for p in points)
        for point in points[:5]:
            route = engine.routes.route(point, st.spec, data.x)
            fast = engine.walk(point, data, st, quiet)
            assert route.probed and route.stack is not mixes and engine.mixes_samples(point, st.spec) is mixes
            ref = engine.walk(point, data, SweepSettings(**{**st.__dict__, "walk": "full"}), quiet, all_points=points)
            assert np.abs(fast.correct - ref.correct).max() <= 1, (path, point, fast.correct, ref.correct)


def test_token_id_model_walks_like_its_full_graph(tmp_path):
    """Integer inputs (token ids): the embedding lookup is the first point, and walking from every
    point equals the whole noisy graph."""
    import warnings

    class TextCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.conv, self.fc = nn.Embedding(50, 8), nn.Conv1d(8, 16, 3), nn.Linear(16, 3)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(self.emb(ids).transpose(1, 2))).amax(dim=2))

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TextCNN().eval(), (torch.randint(0, 50, (2, 12)),), str(tmp_path / "text.onnx"), dynamo=False,
                          input_names=["ids"], output_names=["logits"], dynamic_axes={"ids": {0: "N"}})  # fmt: skip
    loaded = load_model(tmp_path / "text.onnx")
    engine = Engine(loaded, ["CPUExecutionProvider"])
    points = find_points(loaded.model)
    assert [p.op_type for p in points] == ["Gather", "Conv", "Relu", "ReduceMax", "Gemm"]
    ids = np.random.default_rng(0).integers(0, 50, (96, 12))
    data = make_dataset(ids, engine.clean_logits(ids).argmax(axis=1), "ids")
    for spec in (NoiseSpec("add"), NoiseSpec("mul")):
        st = SweepSettings(np.array([0.0, 0.1, 1.0, 10.0]), spec, repeats=2, batch_size=40)
        for point in points:
            fast = engine.walk(point, data, st, quiet)
            ref = engine.walk(point, data, SweepSettings(**{**st.__dict__, "walk": "full"}), quiet, all_points=points)
            assert np.abs(fast.correct - ref.correct).max() <= 1, (point, fast.correct, ref.correct)
        assert fast.correct[0].min() == len(data)  # σ = 0: the clean (label-free) result


def test_walking_activates_one_point_and_global_all(zoo, monkeypatch):
    path, shape = zoo["mlp_bn"]
    loaded = load_model(path)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    points = find_points(loaded.model)
    data = random_data(engine, shape, n=16)
    seen: list[np.ndarray] = []
    original = Engine.run_noisy

    def spy(self, pts, spec, x, z, sa, sm):
        seen.append(np.asarray(sa))
        return original(self, pts, spec, x, z, sa, sm)

    monkeypatch.setattr(Engine, "run_noisy", spy)
    st = SweepSettings(np.array([0.0, 0.5, 1.0]), NoiseSpec("add"), repeats=1, batch_size=16, walk="full")
    engine.walk(points[4], data, st, quiet, all_points=points)
    assert len(seen) == 2  # σ = 0 is the clean result, never a noisy run
    for sa in seen:
        assert np.flatnonzero(sa).tolist() == [4]
    seen.clear()
    chosen = points[2:7]
    engine.global_sweep(chosen, data, st, quiet)
    assert len(seen) == 2 and all(np.all(sa > 0) and len(sa) == len(chosen) for sa in seen)


@pytest.fixture(scope="module")
def digits_torch(tmp_path_factory):
    """A torch MLP+BN trained on digits for a few epochs, and its ONNX export."""
    x_train, y_train, x_test, y_test = digits_split()
    cfg = TrainConfig("mlp", "digits", bn=True, epochs=15, augment=False)
    net, _ = train(cfg, (x_train, y_train), (x_test, y_test), 10, (1, 8, 8))
    path = export_onnx(net, (1, 8, 8), tmp_path_factory.mktemp("digits") / "mlp.onnx")
    return net, path, x_test, y_test


def torch_accuracy(net, module: nn.Module, kind: str, sigma: float, x, y, repeats: int) -> np.ndarray:
    """Independent reference: noise added by a forward hook on ``module``'s output."""

    def hook(_m, _inp, out):
        z = torch.randn_like(out)
        return out + sigma * z if kind == "add" else out * (1 + sigma * z)

    handle = module.register_forward_hook(hook)
    torch.manual_seed(123)
    try:
        with torch.no_grad():
            return np.array([(net(torch.from_numpy(x)).argmax(1).numpy() == y).mean() for _ in range(repeats)])
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("index", "kind", "sigma"), [(1, "add", 0.8), (3, "add", 1.5), (2, "mul", 1.2), (10, "mul", 2.0)]
)
def test_accuracy_matches_torch_forward_hook(digits_torch, index, kind, sigma):
    net, path, x, y = digits_torch
    loaded = load_model(path)
    engine = Engine(loaded, ["CPUExecutionProvider"])
    point = find_points(loaded.model)[index]
    # torch twin of ONNX point i is the module just before NoisePoint i (tested in test_points).
    modules = list(net)
    module = modules[modules.index(net.points[index]) - 1]
    repeats = 30
    st = SweepSettings(np.array([sigma]), NoiseSpec(kind), repeats=repeats, seed=5, batch_size=512)
    ours = engine.walk(point, make_dataset(x, y, "digits"), st, quiet).accuracy[0]
    ref = torch_accuracy(net, module, kind, sigma, x, y, repeats)
    assert 0.2 < ref.mean() < 0.97, "σ chosen where accuracy moves"
    err = np.sqrt(ours.var(ddof=1) / repeats + ref.var(ddof=1) / repeats)
    assert abs(ours.mean() - ref.mean()) < 4 * err + 1e-3, (ours.mean(), ref.mean(), err)
