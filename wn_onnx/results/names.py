"""Short, readable labels for tensor and layer names (tables and figure ticks); full names stay in JSON."""

from __future__ import annotations

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
