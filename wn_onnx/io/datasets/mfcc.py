"""MFCC features per MLPerf Tiny keyword spotting (docs/reference.md), in numpy/scipy.

16 kHz, 1 s clips; 30 ms Hann window (periodic), 20 ms stride, 512-point FFT magnitude; 40 mel
bins on 20–4000 Hz with TensorFlow's ``linear_to_mel_weight_matrix`` construction (HTK mel
scale, DC bin zero); log(mel + 1e-6); DCT-II scaled by 1/√(2·40) as in TensorFlow's
``mfccs_from_log_mel_spectrograms``; first 10 coefficients. A clip gives 49 × 10.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.fft import dct, rfft
from scipy.signal import get_window

SAMPLE_RATE = 16000
CLIP = 16000
WINDOW = 480  # 30 ms
STRIDE = 320  # 20 ms
FFT = 512
MEL_BINS = 40
LOW_HZ, HIGH_HZ = 20.0, 4000.0
COEFFS = 10
FRAMES = 1 + (CLIP - WINDOW) // STRIDE  # 49


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


@cache
def mel_matrix() -> np.ndarray:
    """(FFT/2 + 1) × MEL_BINS triangular filters on the linear spectrogram bins."""
    bins = FFT // 2 + 1
    linear_mel = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, bins)[1:])[:, None]
    edges = np.linspace(hz_to_mel(LOW_HZ), hz_to_mel(HIGH_HZ), MEL_BINS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(
        0.0, np.minimum((linear_mel - lower) / (center - lower), (upper - linear_mel) / (upper - center))
    )
    return np.vstack([np.zeros((1, MEL_BINS)), weights])


def mfcc(audio: np.ndarray) -> np.ndarray:
    """(FRAMES, COEFFS) float32 features of one clip (float samples in [-1, 1], padded/trimmed)."""
    clip = np.zeros(CLIP, np.float64)
    clip[: min(len(audio), CLIP)] = audio[:CLIP]
    frames = np.lib.stride_tricks.sliding_window_view(clip, WINDOW)[::STRIDE][:FRAMES]
    spectrum = np.abs(rfft(frames * get_window("hann", WINDOW, fftbins=True), n=FFT, axis=1))
    log_mel = np.log(spectrum @ mel_matrix() + 1e-6)
    return (dct(log_mel, type=2, axis=1)[:, :COEFFS] / np.sqrt(2.0 * MEL_BINS)).astype(np.float32)
