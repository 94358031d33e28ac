"""User code named on the command line (``module:NAME`` or ``path/to/file.py:NAME``): metric and
noise-model plug-ins are read the same way. A file is read as bytes and those bytes run as a
module of its own (nothing is written beside it, no ``__pycache__``), so the SHA-256 that keys
stored results is the hash of the code that ran; whatever the code raises while it loads,
``SystemExit`` included, is one :class:`PluginError` naming it."""

from __future__ import annotations

import functools
import hashlib
import importlib
import types
from pathlib import Path

from wn_onnx.errors import ConfigError, PluginError


def plugin_failure(label: str, what: str, err: BaseException) -> PluginError:
    """``LABEL WHAT: Type: message`` (``metric raises.py:score failed: ValueError: boom``, the first
    line of the plug-in's own message)."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    return PluginError(f"{label} {what}: {type(err).__name__}{': ' + text if text else ''}")


def file_code(name: str, label: str) -> bytes | None:
    """The bytes of plug-in ``name``'s ``.py`` file (None for a module name); a missing file or a
    path that is no regular file is one ConfigError."""
    module_name = name.rpartition(":")[0]
    if not module_name.endswith(".py"):
        return None
    try:
        code = Path(module_name).read_bytes() if Path(module_name).is_file() else None  # not a FIFO
    except (OSError, ValueError):
        code = None
    if code is None:
        raise ConfigError(f"{label}: no Python file {module_name}")
    return code


@functools.cache
def load_attribute(name: str, label: str, code: bytes | None) -> tuple[object, str]:
    """(attribute, SHA-256 of its module's source) of plug-in ``name``: ``code`` (the bytes of its
    ``.py`` file, from :func:`file_code`) run as a module, else ``module:NAME`` imported; a
    missing attribute is a ConfigError naming it."""
    module_name, _, attr = name.rpartition(":")
    if not module_name or not attr:
        raise ConfigError(f"{label}: give module:NAME or file.py:NAME")
    try:
        if code is not None:
            module = types.ModuleType(f"wn_onnx_plugin_{Path(module_name).stem}")
            module.__file__ = module_name
            exec(compile(code, module_name, "exec"), module.__dict__)  # the bytes hashed below are the code that runs
        else:
            module = importlib.import_module(module_name)
    except (Exception, SystemExit) as err:  # the plug-in's own import error (or exit), in one line
        raise plugin_failure(label, f"cannot import {module_name}", err) from err
    value = getattr(module, attr, None)
    if value is None:
        raise ConfigError(f"{label}: {module_name} has no {attr!r}")
    file = getattr(module, "__file__", None)
    if code is None and file:
        try:
            code = Path(file).read_bytes()
        except OSError:
            code = None
    return value, "" if code is None else hashlib.sha256(code).hexdigest()
