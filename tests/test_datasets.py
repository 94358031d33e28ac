"""Readers on small files written here in each official format; MFCC against a naive twin."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import wn
from scipy.io import savemat, wavfile

from wn_onnx.errors import WnError
from wn_onnx.io.data import load_npz, subset
from wn_onnx.io.datasets import load_split
from wn_onnx.io.datasets.cifar import cifar10
from wn_onnx.io.datasets.fetch import Resource, download
from wn_onnx.io.datasets.idx import read_idx
from wn_onnx.io.datasets.mfcc import mfcc
from wn_onnx.io.datasets.speech_commands import SILENCE, UNKNOWN, WORDS, speech_commands
from wn_onnx.io.datasets.svhn import svhn

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if gz else blob)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_fashion_mnist_layout(tmp_path, gz):
    images = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = RNG.integers(0, 10, 7, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    for _split, prefix in (("test", "t10k"), ("train", "train")):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    s = load_split("fashion-mnist", "test", tmp_path)
    assert s.x.shape == (7, 1, 28, 28) and s.x.dtype == np.float32
    np.testing.assert_allclose(s.x[:, 0], (images / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert s.y.tolist() == labels.tolist()


def test_idx_corrupt_and_truncated(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(WnError, match="bad magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 5), np.uint8), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(WnError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 5)
    with pytest.raises(WnError, match="corrupt gzip"):
        read_idx(tmp_path / "x.gz")


def test_cifar_binary_and_python_releases(tmp_path):
    images = RNG.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    labels = np.array([3, 0, 9, 1, 4], np.uint8)
    binary = tmp_path / "bin"
    binary.mkdir()
    records = np.concatenate([labels[:, None], images.reshape(5, -1)], axis=1)
    records.tofile(binary / "test_batch.bin")
    x, y = cifar10(binary, "test")
    assert np.array_equal(x, images) and y.tolist() == labels.tolist()
    py = tmp_path / "py"
    py.mkdir()
    with (py / "test_batch").open("wb") as f:
        pickle.dump(
            {b"data": images.reshape(5, -1), b"labels": labels.tolist(), b"batch_label": b"testing"}, f, protocol=2
        )
    x2, y2 = cifar10(py, "test")
    assert np.array_equal(x2, images) and y2.tolist() == labels.tolist()
    s = load_split("cifar10", "test", binary)
    mean = np.array([0.4914, 0.4822, 0.4465]).reshape(1, 3, 1, 1)
    std = np.array([0.2023, 0.1994, 0.2010]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(s.x, (images / 255.0 - mean) / std, atol=1e-5)
    assert s.info.classes[3] == "cat"


def test_cifar_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [1]}))
    with pytest.raises(WnError, match=r"refusing to load global builtins\.print"):
        cifar10(tmp_path, "test")


def test_svhn_mat(tmp_path):
    x = RNG.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [5], [10]], np.uint8)})
    images, labels = svhn(tmp_path, "test")
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 1, 5, 0]
    assert np.array_equal(images[2, 1], x[:, :, 1, 2])


def naive_mfcc(audio: np.ndarray) -> np.ndarray:
    """Loop-and-formula twin of the MLPerf Tiny MFCC: explicit DFT, filters, DCT."""
    n_fft, win, hop = 512, 480, 320
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    freqs = np.arange(257) * 8000.0 / 256
    edges = np.linspace(mel(20.0), mel(4000.0), 42)
    k = np.arange(257)[:, None] * np.arange(n_fft)[None, :]
    basis = np.exp(-2j * np.pi * k / n_fft)
    rows = []
    for t in range(49):
        frame = np.zeros(n_fft)
        frame[:win] = audio[t * hop : t * hop + win] * window
        mag = np.abs(basis @ frame)
        energies = []
        for m in range(40):
            lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
            w = [0.0] + [max(0.0, min((mel(f) - lo) / (c - lo), (hi - mel(f)) / (hi - c))) for f in freqs[1:]]
            energies.append(np.dot(mag, w))
        log_mel = np.log(np.array(energies) + 1e-6)
        rows.append(
            [
                2 * sum(log_mel[n] * np.cos(np.pi * q * (2 * n + 1) / 80) for n in range(40)) / np.sqrt(80)
                for q in range(10)
            ]
        )
    return np.array(rows)


def test_mfcc_shape_and_values():
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * RNG.standard_normal(16000)).astype(np.float32)
    got = mfcc(audio)
    assert got.shape == (49, 10)
    np.testing.assert_allclose(got, naive_mfcc(audio.astype(np.float64)), rtol=1e-4, atol=1e-3)


def test_speech_commands_folder(tmp_path):
    def clip(freq: float) -> np.ndarray:
        return (0.2 * np.sin(2 * np.pi * freq * np.arange(16000) / 16000) * 32767).astype(np.int16)

    names = []
    for i, word in enumerate(["yes", "no", "stop", "marvin"]):
        (tmp_path / word).mkdir()
        for j in range(4):
            wavfile.write(tmp_path / word / f"s{j}_nohash_0.wav", 16000, clip(200 + 50 * i + j))
            names.append(f"{word}/s{j}_nohash_0.wav")
    (tmp_path / "_background_noise_").mkdir()
    wavfile.write(
        tmp_path / "_background_noise_" / "white.wav", 16000, (RNG.standard_normal(40000) * 3000).astype(np.int16)
    )
    (tmp_path / "validation_list.txt").write_text(
        "\n".join(n for n in names if n.startswith(("yes/s0", "no/s0"))) + "\n"
    )
    (tmp_path / "testing_list.txt").write_text("\n".join(n for n in names if "s1_" in n) + "\n")
    x, y = speech_commands(tmp_path, "test")
    assert x.shape[1:] == (1, 49, 10)
    words = sorted(int(v) for v in y if v < 10)
    assert words == sorted([WORDS.index("yes"), WORDS.index("no"), WORDS.index("stop")])
    assert (y == SILENCE).sum() >= 1 and (y == UNKNOWN).sum() == 1  # marvin is the only unknown clip
    _xt, yt = speech_commands(tmp_path, "train")
    assert (yt < 10).sum() == 7  # yes, no: s2, s3 (s0 validation, s1 test); stop: s0, s2, s3
    with pytest.raises(WnError, match=r"validation_list\.txt not found"):
        (tmp_path / "validation_list.txt").unlink()
        speech_commands(tmp_path, "test")


def test_fetch_verifies_checksums(tmp_path):
    src = tmp_path / "t10k-labels-idx1-ubyte.gz"
    src.write_bytes(b"official bytes")
    good = hashlib.md5(b"official bytes").hexdigest()
    path = download(Resource(src.as_uri(), "md5", good), tmp_path / "cache")
    assert path.read_bytes() == b"official bytes"
    with pytest.raises(WnError, match="does not match the official"):
        download(Resource(src.as_uri(), "md5", "0" * 32), tmp_path / "other")
    assert not any((tmp_path / "other").iterdir())


def test_missing_dataset_names_where_it_looked(tmp_path):
    with pytest.raises(WnError, match="not found in"):
        load_split("fashion-mnist", "test", tmp_path)
    with pytest.raises(WnError, match="unknown dataset"):
        load_split("imagenet", "test")


def test_limit_is_class_stratified_on_a_sorted_split(tmp_path):
    """A test split sorted by class (Speech Commands comes out so): --limit 40 keeps every class."""
    y = np.repeat(np.arange(12), 50)
    x = np.arange(600, dtype=np.float32).reshape(600, 1)
    np.savez(tmp_path / "sorted.npz", x=x, y=y)
    data = load_npz(tmp_path / "sorted.npz", limit=40)
    counts = np.bincount(data.y, minlength=12)
    assert len(data) == 40 and set(counts) == {3, 4}  # 40/12 per class, largest-remainder rounded
    assert np.all(np.diff(data.x[:, 0]) > 0)  # original order kept
    assert np.array_equal(load_npz(tmp_path / "sorted.npz", limit=40).x, data.x)  # seeded: the same subset every run
    first = load_npz(tmp_path / "sorted.npz", limit=40, limit_mode="first")
    assert np.array_equal(first.x[:, 0], np.arange(40)) and set(first.y) == {0}
    unbalanced = np.r_[np.zeros(90, int), np.ones(10, int)]
    kept = subset(100, unbalanced, 20)
    assert np.bincount(unbalanced[kept]).tolist() == [18, 2]  # each class keeps its share
    assert subset(100, None, 20).tolist() == list(range(20)) and subset(100, unbalanced, 500) is None
    with pytest.raises(WnError, match="limit mode"):
        subset(100, unbalanced, 20, "random")


def test_limit_mode_reaches_the_cli(tmp_path):
    from wn_onnx.io.embedded import DEFAULT_MODEL, digits_split

    _, _, x, y = digits_split()
    order = np.argsort(y, kind="stable")
    np.savez(tmp_path / "sorted.npz", x=x[order], y=y[order])
    common = ["scan", DEFAULT_MODEL, "--data", tmp_path / "sorted.npz", "--limit", "30",
              "--mode", "global", "--sigmas", "0.01", "--repeats", "1", "--json", "--quiet"]  # fmt: skip
    runs = {}
    for mode in ("stratified", "first"):
        res = wn(*common, "--limit-mode", mode)
        assert res.returncode == 0, res.stderr
        runs[mode] = json.loads(res.stdout)
    assert runs["stratified"]["data"]["samples"] == runs["first"]["data"]["samples"] == 30
    # the first 30 of a sorted split are all zeros, which the model gets right; ten classes are harder
    assert runs["first"]["clean_accuracy"] == 1.0
    res = wn(*common, "--limit-mode", "random")
    assert res.returncode == 2 and "limit-mode" in res.stderr
