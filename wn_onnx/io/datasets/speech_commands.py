"""Google Speech Commands v2 as 12 classes (10 words, _silence_, _unknown_), MFCC 1×49×10.

Layout of the official archive: one folder per word of 16 kHz WAV clips, ``_background_noise_``,
and ``validation_list.txt`` / ``testing_list.txt`` naming the clips of those splits; every other
clip is training data. Silence and unknown each make up 10 % of a split (docs/reference.md). Training
clips get background noise mixed in (frequency 0.8, volume up to 0.1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import wavfile

from wn_onnx.errors import DataError
from wn_onnx.io.datasets.mfcc import CLIP, SAMPLE_RATE, mfcc
from wn_onnx.io.safeio import check_budget

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
CLASSES = [*WORDS, "_silence_", "_unknown_"]
SILENCE, UNKNOWN = 10, 11
BACKGROUND = "_background_noise_"
SILENCE_FRACTION = UNKNOWN_FRACTION = 0.1
BACKGROUND_FREQUENCY, BACKGROUND_VOLUME = 0.8, 0.1


def read_wav(path: Path, samples: int | None = None) -> np.ndarray:
    """Mono float samples in [-1, 1]; 16 kHz required. The file is memory-mapped, so a data chunk
    that declares more bytes than the file holds is refused instead of allocated, and only the
    first ``samples`` are copied out (a clip needs one second)."""
    if samples is None:
        check_budget(4 * path.stat().st_size, str(path))  # float32 samples from (at least) bytes
    try:
        rate, data = wavfile.read(path, mmap=True)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable WAV file ({err})") from None
    if rate != SAMPLE_RATE:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {SAMPLE_RATE}")
    data = data[:samples]
    if data.ndim > 1:
        data = data[:, 0]
    if data.dtype.kind == "i":
        return data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128) / 128
    return data.astype(np.float32)


def _list(root: Path, name: str) -> set[str]:
    p = root / name
    if not p.is_file():
        raise DataError(f"{name} not found in {root} (the official Speech Commands v2 layout has it)")
    return {line.strip() for line in p.read_text().splitlines() if line.strip()}


def split_files(root: Path, split: str) -> list[tuple[str, int]]:
    """(relative path, class) of the split's word clips, unknown ones included (subsampled later)."""
    if not root.is_dir():
        raise DataError(f"Speech Commands folder not found: {root}")
    val, test = _list(root, "validation_list.txt"), _list(root, "testing_list.txt")
    out = []
    for wav in sorted(root.glob("*/*.wav")):
        word = wav.parent.name
        if word == BACKGROUND:
            continue
        rel = f"{word}/{wav.name}"
        which = "validation" if rel in val else "test" if rel in test else "train"
        if which == split:
            out.append((rel, WORDS.index(word) if word in WORDS else UNKNOWN))
    return out


def background_clips(root: Path) -> list[np.ndarray]:
    return [read_wav(p) for p in sorted((root / BACKGROUND).glob("*.wav"))]


def speech_commands(root: Path, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MFCC features (N, 1, 49, 10) float32 and labels 0-11 of ``split`` (train/validation/test)."""
    rng = np.random.default_rng(seed)
    files = split_files(root, split)
    known = [f for f in files if f[1] != UNKNOWN]
    unknown = [f for f in files if f[1] == UNKNOWN]
    if not known:
        raise DataError(f"{root}: no clips of the 10 keywords in the {split} split")
    n_words = len(known)
    n_extra = max(1, round(n_words * SILENCE_FRACTION / (1 - SILENCE_FRACTION - UNKNOWN_FRACTION)))
    picked = [unknown[i] for i in rng.permutation(len(unknown))[:n_extra]]
    noise = background_clips(root)
    items = [(rel, label) for rel, label in known + picked] + [(None, SILENCE)] * n_extra
    feats = np.empty((len(items), 1, 49, 10), np.float32)
    labels = np.empty(len(items), np.int64)
    for i, (rel, label) in enumerate(items):
        audio = np.zeros(CLIP, np.float32) if rel is None else read_wav(root / rel, CLIP)
        if split == "train" and noise and (label == SILENCE or rng.random() < BACKGROUND_FREQUENCY):
            clip = noise[rng.integers(len(noise))]
            start = rng.integers(0, max(1, len(clip) - CLIP))
            segment = np.zeros(CLIP, np.float32)
            piece = clip[start : start + CLIP]
            segment[: len(piece)] = piece
            fg = np.zeros(CLIP, np.float32)
            fg[: min(len(audio), CLIP)] = audio[:CLIP]
            audio = np.clip(fg + segment * rng.uniform(0, BACKGROUND_VOLUME), -1.0, 1.0)
        feats[i, 0] = mfcc(audio)
        labels[i] = label
    return feats, labels
