"""What "accuracy" means for a model's output: a score in [0, 1] per sample, summed by the engine.

* ``top1``: one vector of class scores per sample (classes on the last axis, other axes of
  length 1); correct when its argmax is the label.
* ``binary``: probabilities (a sigmoid output, width 1 or one per element); each element is
  predicted 1 above 0.5; the score is the fraction of elements equal to their 0/1 label.
* ``per-position``: an [N, …, K] output, an argmax over the last axis at every position; the
  score is the fraction of positions equal to their label (labels shaped like the output
  without its last axis; a negative label marks a position that is not scored).
* a plug-in ``module:function`` (or ``path/file.py:function``): ``function(clean, noisy,
  labels)`` with the clean and noisy outputs of a batch as onnxruntime returns them (the samples
  on the axis where the model puts them: axis 0 for most models, axis 1 for a sequence-first
  [T, N, K] head) and its labels (samples first; None label-free) returns one score in [0, 1]
  per sample, in sample order; a function with a ``sample_axis`` parameter (or ``**kwargs``)
  gets that axis by keyword.

The engine keeps outputs samples-first (``samples_first``); the built-in metrics score only
outputs whose samples the model puts on axis 0 (curve.clean_pass refuses the others, naming
their real shape), and a plug-in's outputs are moved back to the model's layout before its call.

Label-free, a built-in metric compares the noisy prediction with the clean model's prediction.
a_min (docs/method.md, "Metrics"): the chance level of a built-in metric with labels, else the
score of outputs that carry no information about their sample, estimated on the data.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wn_onnx import plugins
from wn_onnx.errors import ConfigError, DataError, ModelError, PluginError

BUILT_IN = ("top1", "binary", "per-position")
THRESHOLD = 0.5  # binary: a probability above it predicts 1
SHUFFLE_SEED = 0  # the permutation of the a_min estimate
TIMEOUT = 60.0  # seconds a plug-in may take on one batch (--metric-timeout)


def samples_first(out: np.ndarray, axis: int) -> np.ndarray:
    """``out`` (a run's output, samples on ``axis``) with its samples on axis 0 (a view)."""
    return out if axis == 0 else np.moveaxis(out, axis, 0)


def takes_axis(function: Callable) -> bool:
    """Whether a plug-in's signature accepts ``sample_axis`` by keyword."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the three positional arguments only
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == "sample_axis" and p.kind is not p.POSITIONAL_ONLY) for p in params)


def _shown(shape: tuple) -> str:
    return "×".join("?" if d is None else str(d) for d in shape) or "scalar"


def _hint(shape: tuple) -> str:
    """Which metric an output that is not one vector per sample wants. A last axis ten times longer
    than all the others' positions together is no class axis: a detector's [N, 4 + C, anchors] has
    thousands of anchors there, and per-position would score a few rows of thousands of "classes"."""
    last, positions = shape[-1], list(shape[1:-1])
    if last is not None and None not in positions and last >= 10 * int(np.prod(positions)):
        return ("no class axis at the end (a detector's [N, 4 + C, anchors]?) → a plug-in metric, "
                "e.g. docs/examples/detection.py:score (label-free box matching by IoU)")  # fmt: skip
    return "classes on the last axis at every position → --metric per-position; a map of probabilities → --metric binary"


@dataclass(frozen=True)
class Metric:
    """One metric: ``name`` is one of BUILT_IN or a plug-in's ``module:function``; ``timeout``:
    the seconds a plug-in may take on one batch; ``source``: the SHA-256 of the plug-in module's
    file (stored curves are keyed by it: an edited plug-in computes its curves again);
    ``axis_keyword``: the plug-in takes ``sample_axis=`` (:func:`takes_axis`)."""

    name: str
    function: Callable[..., np.ndarray] | None = None
    timeout: float = TIMEOUT
    source: str = ""
    axis_keyword: bool = False

    @property
    def plugin(self) -> bool:
        return self.function is not None

    def classes(self, shape: tuple) -> int:
        """How many classes an output of ``shape`` (samples first) has under this metric; refuses
        a shape the metric cannot score, naming it (None entries: not known yet)."""
        where = f"output of shape {_shown(shape)}"
        if self.plugin:
            return 0
        if len(shape) < 2 and self.name != "binary":
            raise ModelError(f"{self.name}: the {where} has no class axis (a width-1 probability: the binary metric)")
        if self.name == "top1":
            wide = [d for d in shape[1:] if d is None or d > 1]
            if len(wide) > 1:
                raise ModelError(f"top1 scores one vector of class scores per sample, not an {where}: {_hint(shape)}")
            width = int(np.prod([d for d in shape[1:] if d is not None]))
            if width < 2 and None not in shape[1:]:
                raise ModelError(f"top1: the {where} has width {width}; a probability per sample → the binary metric")
            return width
        if self.name == "per-position":
            if len(shape) < 3:
                raise ModelError(f"per-position needs an [N, …, K] output (positions, then classes); got an {where}")
            if shape[-1] is not None and shape[-1] < 2:
                raise ModelError(
                    f"per-position: the {where} has 1 class on its last axis (probabilities → --metric binary)"
                )
            return shape[-1] or 0
        return 2

    def labels(self, y: np.ndarray, shape: tuple, source: str) -> np.ndarray:
        """``y`` checked against an output of ``shape`` (a batch, samples first), in the form
        :meth:`scores` takes it."""
        n, rest = shape[0], tuple(shape[1:])
        if len(y) != n:
            raise DataError(f"{source}: {len(y)} labels for {n} samples")
        if self.plugin:
            return y
        classes = self.classes(shape)
        if self.name == "top1":
            if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
                raise DataError(f"{source}: labels y have shape {y.shape}; top1 takes one integer label per sample")
            y = y.reshape(-1)
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= classes:
                raise DataError(
                    f"{source}: labels span [{lo}, {hi}] but the model has {classes} classes (0-{classes - 1})"
                )
            return y
        want = rest[:-1] if self.name == "per-position" else rest
        if int(np.prod(y.shape[1:])) != int(np.prod(want)):
            raise DataError(
                f"{source}: labels y have shape {y.shape}; --metric {self.name} on an output of shape "
                f"{_shown(shape)} needs {(n, *want)}"
            )
        y = y.reshape((n, *want))
        hi = 1 if self.name == "binary" else classes - 1
        if int(y.max()) > hi or (self.name == "binary" and int(y.min()) < 0):
            raise DataError(
                f"{source}: labels span [{int(y.min())}, {int(y.max())}]; --metric {self.name} takes 0-{hi}"
            )
        return y

    def scores(self, clean: np.ndarray, noisy: np.ndarray, labels: np.ndarray | None, axis: int = 0) -> np.ndarray:
        """One score in [0, 1] per sample (labels None: agreement with ``clean``); ``clean`` and
        ``noisy`` samples-first, ``axis``: where the model puts the samples (a plug-in gets them there)."""
        n = len(noisy)
        if self.plugin:
            got = self._call(np.moveaxis(clean, 0, axis), np.moveaxis(noisy, 0, axis), labels, axis)
            if got.shape != (n,):
                raise PluginError(
                    f"metric {self.name} returned shape {got.shape}, expected one score per sample ({n},)"
                )
            with np.errstate(invalid="ignore"):
                if not np.all((got >= 0) & (got <= 1)):
                    raise PluginError(f"metric {self.name} returned scores outside [0, 1]")
            return got
        pred = self._predict(noisy)
        target = self._predict(clean) if labels is None else labels.reshape(pred.shape)
        if self.name == "top1":
            return (pred == target).astype(np.float64)
        valid = (target >= 0).reshape(n, -1)
        hits = ((pred == target).reshape(n, -1) & valid).sum(axis=1)
        return hits / np.maximum(valid.sum(axis=1), 1)

    def _call(self, clean: np.ndarray, noisy: np.ndarray, labels: np.ndarray | None, axis: int) -> np.ndarray:
        """The plug-in's scores as float64, computed in a thread that may take ``timeout`` seconds
        (a plug-in that never returns is abandoned: the thread is a daemon, the command ends).
        Anything it raises, SystemExit included, is a :class:`PluginError`: user code never ends
        a command with its own exit code, and a CI gate never passes because a plug-in exited."""
        box: list[tuple[bool, object]] = []
        keyword = {"sample_axis": axis} if self.axis_keyword else {}

        def work() -> None:
            try:
                box.append((True, np.asarray(self.function(clean, noisy, labels, **keyword), np.float64)))
            except BaseException as err:  # user code: SystemExit, MemoryError, RecursionError too
                box.append((False, err))

        worker = threading.Thread(target=work, name=f"metric {self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if not box:
            raise PluginError(
                f"metric {self.name} failed: no result after {self.timeout:g} s on one batch (see --metric-timeout)"
            )
        done, value = box[0]
        if not done:
            raise plugin_failure(self.name, "failed", value) from value
        return value

    def _predict(self, out: np.ndarray) -> np.ndarray:
        n = len(out)
        with np.errstate(invalid="ignore"):
            if self.name == "binary":
                return (out > THRESHOLD).astype(np.int64).reshape(n, -1)
            if self.name == "top1":
                flat = out.reshape(n, -1)
                return np.argmax(np.where(np.isfinite(flat), flat, -np.inf), axis=1)
            return np.argmax(np.where(np.isfinite(out), out, -np.inf), axis=-1)

    def check_outputs(self, clean: np.ndarray, where: str) -> None:
        """A binary output must hold probabilities (a threshold of 0.5 means nothing to a logit)."""
        if self.name == "binary" and clean.size and (np.nanmin(clean) < 0 or np.nanmax(clean) > 1):
            raise ModelError(
                f"{where}: --metric binary needs probabilities in [0, 1] (a sigmoid output); it ranges "
                f"[{float(np.nanmin(clean)):.3g}, {float(np.nanmax(clean)):.3g}]"
            )

    def chance(self, clean: np.ndarray, labels: np.ndarray | None, axis: int = 0) -> float:
        """a_min: a built-in metric's chance level with labels (1/K; binary 1/2), else the mean
        score of outputs from other samples — ``clean`` (samples first; the model puts them on
        ``axis``) permuted so that no sample keeps its own — against the labels (label-free:
        against the clean outputs)."""
        if labels is not None and not self.plugin:
            classes = self.classes(clean.shape)
            return 1.0 / classes
        n = len(clean)
        if n < 2:
            return 0.0
        order = np.random.default_rng(SHUFFLE_SEED).permutation(n)
        other = np.empty(n, np.int64)
        other[order] = np.roll(order, 1)  # a cycle through all samples: nobody gets its own outputs
        finite = np.isfinite(clean.reshape(n, -1)).all(axis=1)
        with np.errstate(all="ignore"):
            got = self.scores(clean, clean[other], labels, axis)
        return float(np.mean(np.where(finite[other] & finite, got, 0.0)))


def score(
    metric: Metric, clean: np.ndarray, noisy: np.ndarray, labels: np.ndarray | None, n: int, axis: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(score, non-finite flag) per sample for the first ``n`` rows of ``clean`` and ``noisy``
    (samples first, :func:`samples_first`; the other rows pad a batch built into the model); a
    sample whose outputs are not all finite scores 0. ``axis``: where the model puts the samples
    (a plug-in gets its outputs in that layout)."""
    clean, noisy = clean[:n], noisy[:n]
    labels = None if labels is None else labels[:n]
    with np.errstate(all="ignore"):
        finite = np.isfinite(noisy.reshape(n, -1)).all(axis=1)
        got = metric.scores(clean, noisy, labels, axis)
    return np.where(finite, got, 0.0), ~finite


def plugin_failure(name: str, what: str, err: BaseException) -> PluginError:
    """``metric NAME failed: ValueError: boom`` (plugins.plugin_failure)."""
    return plugins.plugin_failure(f"metric {name}", what, err)


def get_metric(name: str = "top1", timeout: float | None = None) -> Metric:
    """The metric called ``name``: a built-in, or ``module:function`` / ``file.py:function``; a
    plug-in may take ``timeout`` seconds per batch (None: TIMEOUT). A plug-in file is read each
    time and run again when its bytes changed; a module is imported once per process."""
    timeout = TIMEOUT if timeout is None else timeout
    if not (isinstance(timeout, int | float) and 0 < timeout < float("inf")):
        raise ConfigError(f"the metric timeout must be a finite number of seconds > 0, got {timeout!r}")
    if name in BUILT_IN:
        return Metric(name, None, float(timeout))
    module_name, _, attr = name.rpartition(":")
    if not module_name or not attr:
        raise ConfigError(f"unknown metric {name!r}; choose {', '.join(BUILT_IN)} or module:function")
    code = plugins.file_code(name, f"metric {name!r}")
    function, source = _plugin(name, code)
    return Metric(name, function, float(timeout), source, takes_axis(function))


def _plugin(name: str, code: bytes | None) -> tuple[Callable, str]:
    """(the function, the SHA-256 of its module's source) of plug-in ``name`` (plugins.load_attribute)."""
    function, source = plugins.load_attribute(name, f"metric {name}", code)
    if not callable(function):
        raise ConfigError(f"metric {name!r}: {name.rpartition(':')[0]} has no function {name.rpartition(':')[2]!r}")
    return function, source
