"""Precision variants of an ONNX model (fp16, int8 dynamic/static, int4), built with
ONNX Runtime's quantisation tools and onnxconverter-common, cached by content,
and judged for accuracy against the fp32 reference."""

from optiserve.variants.accuracy import compare_outputs
from optiserve.variants.build import Variant, build_variant
from optiserve.variants.cache import VariantCache, default_cache_dir
from optiserve.variants.recipe import VariantRecipe

__all__ = ["Variant", "VariantCache", "VariantRecipe", "build_variant", "compare_outputs", "default_cache_dir"]
