"""The errors users see: a clear, single-line message (the CLI prints it and exits with 2).

One base class, so a notebook can catch everything wn-onnx refuses with ``except WnError``, and
four kinds, so a script can tell a bad model from bad data, a bad setting or a missing device.
Messages name concepts ("the repeat count"), not command-line flags: the library is used from
Python too.
"""


class WnError(ValueError):
    """Bad input or usage."""


class ModelError(WnError):
    """The ONNX model cannot be loaded or analysed (corrupt file, no float output, opset, external data)."""


class DataError(WnError):
    """The evaluation data does not fit the model or is unreadable (shape, labels, file format, size)."""


class ConfigError(WnError):
    """A setting, config file, σ grid or point selection is invalid."""


class PluginError(ConfigError):
    """A user's plug-in (a metric) raised, returned no scores or outlasted its time: its own
    failure, named in one line. Never a point's ``failed`` status: the whole command fails."""


class DeviceError(WnError):
    """The requested execution provider (e.g. CUDA) is not available."""


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a scan; ``report`` holds what was finished, marked ``"partial": true``."""

    def __init__(self, report: dict) -> None:
        super().__init__("scan interrupted")
        self.report = report
