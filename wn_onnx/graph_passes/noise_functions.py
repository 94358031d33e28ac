"""The noise ops, authored with onnxscript as model-local functions in the ``wn_onnx`` domain.

Each noisy point becomes one named node (``wn_onnx.AddNoise`` …) that a viewer shows as such and
onnxruntime inlines. Two families share the same formulas (the numpy twin is
:func:`wn_onnx.noise.apply_noise`):

* ``fed``: standard-normal tensors ``z`` arrive as inputs. The evaluator draws them from seeded
  numpy generators, so results never depend on session call order or thread scheduling.
* ``internal``: ``RandomNormalLike`` draws inside the graph, bypassed by an ``If`` when every
  sigma is 0 so the point is then an exact identity — the form to deploy in a simulator.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from wn_onnx.noise import NoiseSpec

DOMAIN = "wn_onnx"
wn = Opset(DOMAIN, 1)


@script(wn, default_opset=op)
def AddNoise(x, z, sigma_add):
    return x + sigma_add * z


@script(wn, default_opset=op)
def MulNoise(x, z, sigma_mul):
    return x * (1.0 + sigma_mul * z)


@script(wn, default_opset=op)
def MulAddNoise(x, z, z2, sigma_add, sigma_mul):
    return x * (1.0 + sigma_mul * z) + sigma_add * z2


@script(wn, default_opset=op)
def AddMulNoise(x, z, z2, sigma_add, sigma_mul):
    return (x + sigma_add * z) * (1.0 + sigma_mul * z2)


@script(wn, default_opset=op)
def AddNoiseDrawn(x, sigma_add):
    if sigma_add > 0.0:
        y = AddNoise(x, op.RandomNormalLike(x), sigma_add)
    else:
        y = op.Identity(x)
    return y


@script(wn, default_opset=op)
def MulNoiseDrawn(x, sigma_mul):
    if sigma_mul > 0.0:
        y = MulNoise(x, op.RandomNormalLike(x), sigma_mul)
    else:
        y = op.Identity(x)
    return y


@script(wn, default_opset=op)
def MulAddNoiseDrawn(x, sigma_add, sigma_mul):
    if sigma_add + sigma_mul > 0.0:
        y = MulAddNoise(x, op.RandomNormalLike(x), op.RandomNormalLike(x), sigma_add, sigma_mul)
    else:
        y = op.Identity(x)
    return y


@script(wn, default_opset=op)
def AddMulNoiseDrawn(x, sigma_add, sigma_mul):
    if sigma_add + sigma_mul > 0.0:
        y = AddMulNoise(x, op.RandomNormalLike(x), op.RandomNormalLike(x), sigma_add, sigma_mul)
    else:
        y = op.Identity(x)
    return y


_FED = {"add": AddNoise, "mul": MulNoise, "mul-first": MulAddNoise, "add-first": AddMulNoise}
_DRAWN = {"add": AddNoiseDrawn, "mul": MulNoiseDrawn, "mul-first": MulAddNoiseDrawn, "add-first": AddMulNoiseDrawn}


def _key(spec: NoiseSpec) -> str:
    return spec.order if spec.kind == "mixed" else spec.kind


def noise_function(spec: NoiseSpec, source: str):
    """The onnxscript function for ``spec``; ``source`` is ``fed`` or ``drawn``."""
    return (_FED if source == "fed" else _DRAWN)[_key(spec)]


def sigma_inputs(spec: NoiseSpec) -> tuple[str, ...]:
    """Which per-point sigma components the function takes, in argument order."""
    return {"add": ("sigma_add",), "mul": ("sigma_mul",)}.get(spec.kind, ("sigma_add", "sigma_mul"))


def function_closure(spec: NoiseSpec, source: str, opset_version: int) -> list[ir.Function]:
    """The function for ``spec`` and the functions it calls, as onnx_ir functions whose default
    opset matches the model's (ONNX requires one version per domain in a model)."""
    fns = [noise_function(spec, source)]
    if source != "fed":
        fns.append(noise_function(spec, "fed"))
    out = []
    for fn in fns:
        proto = fn.to_function_proto()
        for imp in proto.opset_import:
            if imp.domain == "":
                imp.version = opset_version
        if not any(imp.domain == DOMAIN for imp in proto.opset_import):
            proto.opset_import.add(domain=DOMAIN, version=1)
        out.append(ir.serde.deserialize_function(proto))
    return out

