"""Whether several σ values may share one run, stacked on the batch axis of a walk's suffix.

Not where the graph after the point mixes the samples of a batch (dynamic quantization's
per-tensor scale, statistics over the batch): a large σ next to a small one would then change
the small one's result; nor where the graph does not take the larger batch.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from wn_onnx.engine.sessions import run
from wn_onnx.errors import WnError
from wn_onnx.graph_passes.insert_noise import SIGMA_INPUT
from wn_onnx.graph_passes.noise_functions import sigma_inputs
from wn_onnx.noise import NoiseSpec

PROBE_SAMPLES = 4
PROBE_SIGMA = 1e3


def stacking_is_exact(
    session: ort.InferenceSession, spec: NoiseSpec, name: str, start: np.ndarray, axis: int, output: str
) -> bool:
    """Whether σ stacked with others in ``session`` (a suffix from StackNoisyInputPass with noisy
    input ``name``) gives the outputs it gives alone: probed on a few real activations ``start``
    (samples on ``axis``) with σ = (0, PROBE_SIGMA) against σ = 0 alone."""
    n = min(start.shape[axis], PROBE_SAMPLES)
    x = np.take(start, np.arange(n), axis=axis)
    z = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    feeds = {name: x, **dict.fromkeys(("wn_z", "wn_z2")[: spec.draws], z)}
    comps = [SIGMA_INPUT[c] for c in sigma_inputs(spec)]
    try:
        alone = run(session, (output,), {**feeds, **{c: np.zeros(1, np.float32) for c in comps}})[0]
        both = run(session, (output,), {**feeds, **{c: np.array([0, PROBE_SIGMA], np.float32) for c in comps}})[0]
    except WnError:
        return False
    with np.errstate(all="ignore"):
        alone = alone.reshape(n, -1).astype(np.float64)
        both = both.reshape(2, n, -1)[0].astype(np.float64)
    scale = float(np.nanmax(np.abs(alone), initial=0.0)) or 1.0
    return bool(np.allclose(both, alone, rtol=1e-3, atol=1e-4 * scale, equal_nan=True))
