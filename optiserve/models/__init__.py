"""Models to measure: the offline zoo, graph inspection, and input synthesis."""

from optiserve.models.graph import InputSpec, ModelInfo, inspect_model
from optiserve.models.inputs import make_inputs, parse_shape_overrides
from optiserve.models.zoo import ZOO, build_zoo, resolve_model

__all__ = [
    "ZOO",
    "InputSpec",
    "ModelInfo",
    "build_zoo",
    "inspect_model",
    "make_inputs",
    "parse_shape_overrides",
    "resolve_model",
]
