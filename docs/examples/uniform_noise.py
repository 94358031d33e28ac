"""A noise-model plug-in: uniform noise of relative amplitude a, x + a·max|x|·u with u uniform in
[-1, 1], on activations (max|x| over the scanned samples) or weights (max|W| of the layer).

    wn-onnx scan --noise docs/examples/uniform_noise.py:Uniform --on weights
    wn-onnx scan --noise docs/examples/uniform_noise.py:Uniform --mode walking
"""

import numpy as np

from wn_onnx.noise import Axis, NoiseModel, Reference


class Uniform(NoiseModel):
    """x + a·max|x|·u, u ~ U(-1, 1) per element."""

    name = "uniform"
    axis = Axis("amplitude", unit="", scale="log", default="log:1e-3:1e2:16")
    targets = ("activations", "weights")

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...], top: float) -> list[np.ndarray]:
        # One draw, shared by every amplitude of the sweep (common random numbers).
        return [rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)]

    def perturb(self, x: np.ndarray, strength: float, draws: list[np.ndarray], ref: Reference) -> np.ndarray:
        # ref.absmax: the tensor's largest |value| (the layer's weights, or the clean activations)
        return (x + strength * ref.absmax * draws[0]).astype(x.dtype)
