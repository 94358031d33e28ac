"""onnxruntime sessions of one scan: which providers, with which options, and failures as WnErrors.

A provider that does not start is an error here, never a silent CPU run. Suffix runs bind their
large inputs to the session's device once per draw (:class:`BoundInputs`), and keep their memory
from run to run within a batch.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from wn_onnx.errors import DeviceError, ModelError, WnError
from wn_onnx.graph_passes import ExtractSuffixPass
from wn_onnx.io.model import LoadedModel


def providers_for(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceError(
                "--device cuda needs onnxruntime-gpu with CUDA; only the CPU is available (pip install 'wn-onnx[gpu]', then "
                "pip install --force-reinstall --no-deps onnxruntime-gpu: both builds install into one folder)"
            )
        # CUDA/cuDNN from pip's nvidia-* wheels (torch's, or onnxruntime-gpu[cuda,cudnn]); it prints
        # what it misses, and a provider that then fails to start is reported by Sessions.build
        if hasattr(ort, "preload_dlls"):
            with contextlib.redirect_stdout(io.StringIO()):
                ort.preload_dlls()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise DeviceError(f"unknown device {device!r}; use cpu or cuda")


class Sessions:
    """Builds sessions with this scan's providers and options."""

    def __init__(self, providers: list[str], threads: int = 0) -> None:
        self.providers = providers
        # no memory arena but where asked (build): an arena keeps its largest run's memory after
        # the run, and a scan holds several sessions (the memory budget, engine.memory, counts one
        # run at a time); without one, every run maps and faults in fresh memory for its values,
        # which costs a suffix run of a small model about half of its time
        self.options, self.arena = (self._options(threads, arena) for arena in (False, True))

    @staticmethod
    def _options(threads: int, arena: bool) -> ort.SessionOptions:
        options = ort.SessionOptions()
        # fatal only: every failure of a session is an exception that becomes one explained line
        # (Sessions.build, run); onnxruntime's own error log would print it again, raw
        options.log_severity_level = 4
        options.enable_cpu_mem_arena = arena
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        return options

    def build(self, model: ir.Model | onnx.ModelProto, arena: bool = False) -> ort.InferenceSession:
        """A session of ``model``; failures are WnErrors. ``arena``: a session run many times in a
        row on values of one size (a walked point's suffix), which keeps its memory from run to
        run until a run gives it back (:meth:`BoundInputs.run`)."""
        proto = model if isinstance(model, onnx.ModelProto) else ir.to_proto(model)
        options = self.arena if arena else self.options
        try:
            with warnings.catch_warnings():  # a provider that is not there is reported below, once
                warnings.simplefilter("ignore")
                session = ort.InferenceSession(proto.SerializeToString(), options, providers=self.providers)
        except Exception as err:
            first = str(err).strip().splitlines()[0]
            raise ModelError(f"onnxruntime cannot load the model: {first}") from None
        missing = [p for p in self.providers if p not in session.get_providers()]
        if missing:  # onnxruntime falls back to the CPU silently; a scan claiming the GPU must not
            raise DeviceError(
                f"onnxruntime could not start {', '.join(missing)} (CUDA/cuDNN libraries or the GPU missing?); "
                "it would silently run on the CPU — use --device cpu, or fix the CUDA setup"
            )
        return session


def extracted(loaded: LoadedModel, inputs: list[str], outputs: list[str]) -> ir.Model | onnx.ModelProto:
    """The graph computing ``outputs`` from ``inputs``: copied as that part alone where it can be
    (:meth:`LoadedModel.part`, no parse into onnx_ir and back), else cut from a whole copy."""
    part = loaded.part(inputs, outputs)
    if part is not None:
        return part
    model = loaded.fresh()
    ExtractSuffixPass(inputs, outputs)(model)
    return model


def run(session: ort.InferenceSession, names: tuple[str, ...], feeds: dict) -> list[np.ndarray]:
    """``session.run`` whose failure is a one-line WnError (onnxruntime's message may span lines:
    "… for the following indices", then the indices)."""
    try:
        return session.run(list(names), feeds)
    except Exception as err:
        text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
        raise WnError(f"onnxruntime failed: {text[:300]}") from None


RELEASE = ort.RunOptions()  # a run that gives its session's memory arena back at its end
RELEASE.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


class BoundInputs:
    """IO binding of a suffix session: activations and noise are placed on the session's device
    once per (batch, draw); each σ chunk then sends only its few σ values (with the CUDA
    provider this removes the host→device copy of the large inputs from every run)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.binding = session.io_binding()
        self.values: dict[str, ort.OrtValue] = {}  # keeps bound buffers alive

    def put(self, name: str, array: np.ndarray) -> None:
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)
        self.values[name] = value
        self.binding.bind_ortvalue_input(name, value)

    def run(self, output: str, small: dict[str, np.ndarray], release: bool = False) -> np.ndarray:
        """``release``: the last run for a while: the memory arena of the session (built with
        ``arena``) is given back at its end instead of kept for the next run (the host's memory;
        a GPU keeps its own)."""
        for name, array in small.items():
            self.binding.bind_cpu_input(name, array)
        self.binding.bind_output(output)
        self.session.run_with_iobinding(self.binding, RELEASE if release and self.device == "cpu" else None)
        return self.binding.copy_outputs_to_cpu()[0]
