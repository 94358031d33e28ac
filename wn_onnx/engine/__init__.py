"""The onnxruntime evaluator of accuracy under noise, split by job (docs/design.md):

sessions (providers, options), draws (seeded noise), axes (where the samples lie), routes (the
derived graphs: prefixes, suffixes, affine chains, fed-noise graphs), stacking (when σ values
may share a run), sweep (the loop walking and global share), walking and global_noise (their
evaluations), core (the Engine a scan holds).
"""

from wn_onnx.engine.core import Engine
from wn_onnx.engine.sessions import providers_for
from wn_onnx.engine.sweep import Batch, Counts, SweepSettings

__all__ = ["Batch", "Counts", "Engine", "SweepSettings", "providers_for"]
