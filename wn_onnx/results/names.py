"""Short, readable labels for tensor and layer names (tables and figure ticks); full names stay in JSON."""

from __future__ import annotations

import math

ELLIPSIS = "…"


def shorten(name: str, width: int) -> str:
    """``name`` cut in the middle to at most ``width`` characters: the start says which block, the end
    which tensor, so both are kept (``jax2tf_get_lo…/conv_2/Relu``)."""
    if len(name) <= width:
        return name
    if width <= 1:
        return ELLIPSIS[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return name[:head] + ELLIPSIS + (name[-tail:] if tail else "")


def point_label(point: dict, width: int = 22) -> str:
    """``"index tensor"`` as the paper labels layers (Figs. 2, 10, 11), the tensor shortened."""
    return f"{point['index']} {shorten(str(point['tensor']), width)}"


TIME_UNITS = (("y", 3.15576e7), ("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def level_text(report: dict, strength: float | None, error: float | None = None) -> str:
    """A strength as the report's axis reads it (with ``error`` in the same unit): bits on a
    falling axis, a time in the largest unit it reaches (115 d ± 38 d), else the value."""
    if strength is None:
        return "—"
    axis = report.get("axis") or {}
    if axis.get("more") == "down":
        return f"{-math.log2(strength):.3g} bits" if strength > 0 else "—"
    unit, size = "", 1.0
    if axis.get("unit") == "s":  # in the largest unit it reaches: 115 d, not 9.96e+06 s
        unit, size = next(((u, v) for u, v in TIME_UNITS if strength >= v), TIME_UNITS[-1])
    shown = f"{strength / size:.3g}" + (f" ± {error / size:.2g}" if error else "")
    return f"{shown} {unit}".strip()


def mu_text(report: dict, curve: dict) -> str:
    """μ as the axis reads it, a bound written as one (> 10 y, < 1 bits), an ``ok`` μ with its error."""
    falling = (report.get("axis") or {}).get("more") == "down"
    bound = {"not-reached": "<" if falling else ">", "no-drop-from-start": "≥" if falling else "≤"}.get(curve.get("status"))
    error = curve.get("mu_err") if curve.get("status") in ("ok", "two-drops") else None
    text = level_text(report, curve.get("mu"), error)
    return f"{bound} {text}" if bound and curve.get("mu") is not None else text
