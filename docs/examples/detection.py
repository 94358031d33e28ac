"""A label-free metric for object detectors whose output is [N, 4 + C, anchors] (YOLOv5u/v8/11
exports: per anchor a box cx, cy, w, h, then C class scores), for ``--metric
docs/examples/detection.py:score --label-free``.

A sample's score is the share of the clean model's detections (anchors whose best class score
passes CONFIDENCE, the TOP strongest) that the noisy output still finds: a noisy detection of
the same class whose box overlaps by IoU ≥ MATCH. A sample without clean detections scores 1 when
the noisy output has none either, else 0. With labels (ground-truth boxes) write your own:
``labels`` is whatever the data's ``y`` holds.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.25  # a class score above this is a detection
MATCH = 0.5  # IoU at which a noisy box finds a clean one
TOP = 100  # clean detections compared per sample, strongest first


def _detections(out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes as x0, y0, x1, y1; classes; scores) of one sample's [4 + C, anchors] output."""
    boxes, scores = out[:4].T, out[4:]
    classes, best = scores.argmax(axis=0), scores.max(axis=0)
    keep = np.flatnonzero(np.isfinite(best) & (best > CONFIDENCE))
    keep = keep[np.argsort(-best[keep], kind="stable")][:TOP]
    cx, cy, w, h = boxes[keep].T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), classes[keep], best[keep]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (x0, y0, x1, y1)."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def score(clean: np.ndarray, noisy: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """One score in [0, 1] per sample: the share of clean detections the noisy output keeps."""
    out = np.empty(len(clean))
    for i, (c, n) in enumerate(zip(clean, noisy, strict=True)):
        ref, ref_class, _ = _detections(c)
        got, got_class, _ = _detections(n)
        if len(ref) == 0:
            out[i] = float(len(got) == 0)
            continue
        same = ref_class[:, None] == got_class[None, :]
        out[i] = float(np.mean(np.any(same & (_iou(ref, got) >= MATCH), axis=1))) if len(got) else 0.0
    return out
