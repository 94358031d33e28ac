"""Graph passes over onnx_ir models: one pass, one job, composable and tested alone."""

from wn_onnx.graph_passes.extract import (
    ExposeValuesPass,
    ExtractSuffixPass,
    LinearPartPass,
    affine_chain,
    suffix_inputs,
)
from wn_onnx.graph_passes.insert_noise import InsertNoisePass, z_input_names
from wn_onnx.graph_passes.points import Point, data_dependent, find_points, select_points

__all__ = [
    "ExposeValuesPass",
    "ExtractSuffixPass",
    "InsertNoisePass",
    "LinearPartPass",
    "Point",
    "affine_chain",
    "data_dependent",
    "find_points",
    "select_points",
    "suffix_inputs",
    "z_input_names",
]
