"""Graph vocabulary shared by loading and the graph passes (kept here so loading a model does not
import the passes or onnxscript)."""

from __future__ import annotations

import onnx_ir as ir

MIN_OPSET = 15  # CastLike, which onnxscript emits for the literal comparisons, is opset 15

FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})

# Ops that move, view or re-type data without computing on it: noise after them would duplicate
# the noise already injected after their producer.
LAYOUT_OPS = frozenset(
    {
        "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "CastLike",
        "Shape", "Size", "Constant", "ConstantOfShape", "Gather", "GatherElements", "GatherND",
        "Concat", "Split", "Slice", "Expand", "Tile", "Pad", "Dropout", "DepthToSpace",
        "SpaceToDepth", "Range", "NonZero", "Optional", "OptionalGetElement",
    }
)  # fmt: skip


# The prefix of every name the graph passes add (σ and draw inputs, noise nodes, constants): a
# model's own value named so would collide with them.
RESERVED_PREFIX = "wn_"

# Set on a value that conversion renamed (see model.py): the name of the user's value holding the
# same numbers in another layout, where its point is placed and reported.
USER_VALUE = "wn_onnx.user_value"
