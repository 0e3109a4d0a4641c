"""The offline model zoo, graph inspection, the input layout and input synthesis (members load on first use)."""

from optiserve._lazy import lazy_exports

_NAMES = {
    "InputSpec": "graph",
    "ModelInfo": "graph",
    "inspect_model": "graph",
    "make_inputs": "inputs",
    "parse_shape_overrides": "layout",
    "infer_layout": "layout",
    "ZOO": "zoo",
    "build_zoo": "zoo",
    "resolve_model": "zoo",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
