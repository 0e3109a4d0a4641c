"""The input layout: which axis of each input is the batch, and every other dim resolved.

One description, inferred here once and recorded in the profile, is what the
profiler, graph cost, server, batcher, load test and GPU optimisation profiles
all use, so none of them assumes the batch is axis 0 of every input.

Inference, in order: a ``--batch-axis INPUT=AXIS`` override; 0-d inputs are
never batched; a symbolic dim name shared by several inputs (``batch`` in
``input[batch, seq]`` and ``state[2, batch, 128]``) is the batch wherever it
appears; else the first dim if it is dynamic; else, when the first dim is fixed
at 1, a fixed batch of 1; else the first dynamic dim; else (all dims fixed) the
axis whose size equals the model's fixed batch, or none.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from optiserve.errors import ModelError, UsageError
from optiserve.models.graph import Dim, InputSpec, ModelInfo
from optiserve.types import InputLayout, TensorLayout

_SHAPE_RE = re.compile(r"^\s*([^=\s]+)\s*=\s*(\d+(?:\s*[x,]\s*\d+)*)\s*$")
_AXIS_RE = re.compile(r"^\s*([^=\s]+)\s*=\s*(-?\d+|none)\s*$", re.IGNORECASE)
_BATCH_WORDS = ("batch", "n", "b", "bs", "batch_size", "num_samples")


def split_items(value: str | Iterable[str]) -> list[str]:
    """``a=1,2,b=3`` -> ``["a=1,2", "b=3"]``: a comma starts a new item only where
    the next part names one (has ``=``), so ``--shape x=3,48,192`` stays whole."""
    parts: list[str] = []
    raw = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    for part in raw:
        part = part.strip()
        if not part:
            continue
        if "=" in part or not parts:
            parts.append(part)
        else:
            parts[-1] = f"{parts[-1]},{part}"
    return parts


def parse_shape_overrides(items: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``NAME=DIMS`` items. NAME is a symbolic dim (``seq=128``) or an input whose
    item shape follows without the batch axis (``x=3,48,192`` or ``x=3x48x192``)."""
    out: dict[str, tuple[int, ...]] = {}
    for item in split_items(list(items)):
        m = _SHAPE_RE.match(item)
        if not m:
            raise UsageError(f"malformed --shape {item!r}: expected NAME=DIMS, e.g. seq=128 or pixels=3x224x224")
        dims = tuple(int(d) for d in re.split(r"[x,]", m.group(2).replace(" ", "")))
        if any(d <= 0 for d in dims):
            raise UsageError(f"malformed --shape {item!r}: dims must be positive")
        out[m.group(1)] = dims
    return out


def parse_batch_axes(items: Iterable[str]) -> dict[str, int | None]:
    """``INPUT=AXIS`` items (``state=1``, ``sr=none``)."""
    out: dict[str, int | None] = {}
    for item in split_items(list(items)):
        m = _AXIS_RE.match(item)
        if not m:
            raise UsageError(f"malformed --batch-axis {item!r}: expected INPUT=AXIS or INPUT=none, e.g. state=1")
        out[m.group(1)] = None if m.group(2).lower() == "none" else int(m.group(2))
    return out


def _shared_batch_names(specs: Iterable[InputSpec]) -> list[str]:
    """Symbolic names that look like the batch: shared by several inputs, batch-like names first."""
    counts: Counter[str] = Counter()
    for s in specs:
        counts.update({d for d in s.dims if isinstance(d, str)})
    shared = [n for n, c in counts.items() if c >= 2]
    named = [n for n in counts if n.lower() in _BATCH_WORDS or "batch" in n.lower()]
    return sorted(set(shared) | set(named), key=lambda n: (n not in named, -counts[n], n))


def _infer_axis(spec: InputSpec, batch_names: list[str]) -> int | None:
    dims = spec.dims
    if not dims:
        return None
    for name in batch_names:
        if name in dims:
            return dims.index(name)
    if not isinstance(dims[0], int):
        return 0
    if dims[0] == 1:
        return 0
    dynamic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    return dynamic[0] if dynamic else 0


def _resolve_dim(spec: InputSpec, i: int, d: Dim, shapes: Mapping[str, tuple[int, ...]]) -> int:
    if isinstance(d, int):
        return d
    if isinstance(d, str) and d in shapes and len(shapes[d]) == 1:
        return shapes[d][0]
    name = d if isinstance(d, str) else "?"
    hint = f"--shape {d}=N or " if isinstance(d, str) else ""
    raise ModelError(
        f"input {spec.name!r} has dynamic dim {name!r} at position {i}: pass {hint}--shape {spec.name}=DIMS "
        "(every dim but the batch)"
    )


def infer_batch_axes(info: ModelInfo, batch_axes: Mapping[str, int | None] | None = None) -> dict[str, int | None]:
    """The batch axis of every input (None: not batched), overrides applied; dims need not be resolved."""
    batch_axes = dict(batch_axes or {})
    batch_names = _shared_batch_names(info.inputs)
    out: dict[str, int | None] = {}
    for spec in info.inputs:
        rank = len(spec.dims)
        if spec.name not in batch_axes:
            out[spec.name] = _infer_axis(spec, batch_names)
            continue
        axis = batch_axes[spec.name]
        if axis is not None:
            if axis < 0:
                axis += rank
            if not 0 <= axis < rank:
                raise UsageError(
                    f"--batch-axis {spec.name}={batch_axes[spec.name]}: input {spec.name!r} has {rank} dims"
                )
        out[spec.name] = axis
    # all-fixed inputs whose first dim is not the others' fixed batch (state[2, 1, 128]
    # beside input[1, 576]): the batch is the first axis of that size, if any
    sizes = {
        spec.dims[a]
        for spec in info.inputs
        if (a := out[spec.name]) is not None
        and isinstance(spec.dims[a], int)
        and (spec.name in batch_axes or a != 0 or spec.dims[0] == 1)
    }
    if len(sizes) == 1:
        size = next(iter(sizes))
        for spec in info.inputs:
            a = out[spec.name]
            if spec.name in batch_axes or a is None or not all(isinstance(d, int) for d in spec.dims):
                continue
            if spec.dims[a] != size:
                out[spec.name] = next((i for i, d in enumerate(spec.dims) if d == size), None)
    return out


def infer_layout(
    info: ModelInfo,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_axes: Mapping[str, int | None] | None = None,
) -> InputLayout:
    """The layout of ``info``'s inputs with ``--shape`` and ``--batch-axis`` applied.
    Raises one line naming a dim that is still unknown, or an override that does not fit."""
    shapes = dict(shapes or {})
    batch_axes = dict(batch_axes or {})
    names = {i.name for i in info.inputs}
    unknown_axes = sorted(set(batch_axes) - names)
    if unknown_axes:
        raise UsageError(
            f"--batch-axis names {', '.join(unknown_axes)}, which the model does not have; "
            f"its inputs: {', '.join(sorted(names))}"
        )
    symbolic = {d for i in info.inputs for d in i.dims if isinstance(d, str)}
    unknown = [k for k in shapes if k not in names | symbolic]
    if unknown:
        raise UsageError(
            f"--shape names {', '.join(unknown)}, which the model does not have; "
            f"it has {', '.join(sorted(names | symbolic))}"
        )
    axes = infer_batch_axes(info, batch_axes)
    batch_names = _shared_batch_names(info.inputs)
    layouts: list[TensorLayout] = []
    fixed: set[int] = set()
    for spec in info.inputs:
        rank = len(spec.dims)
        axis = axes[spec.name]
        dims: list[int] = []
        if spec.name in shapes:
            item = shapes[spec.name]
            want = rank - (0 if axis is None else 1)
            if len(item) != want:
                raise UsageError(
                    f"--shape {spec.name}=... gives {len(item)} dims but input {spec.name!r} has {want}"
                    + (" besides the batch" if axis is not None else "")
                )
            it = iter(item)
            for i, d in enumerate(spec.dims):
                if i == axis:
                    dims.append(1)
                    continue
                given = next(it)
                if isinstance(d, int) and d != given:
                    raise UsageError(f"--shape {spec.name}=...: dim {i} is fixed at {d} in the model, not {given}")
                dims.append(given)
        else:
            for i, d in enumerate(spec.dims):
                dims.append(1 if i == axis else _resolve_dim(spec, i, d, shapes))
        if axis is not None and isinstance(spec.dims[axis], int):
            fixed.add(int(spec.dims[axis]))  # type: ignore[arg-type]
            dims[axis] = 1
        layouts.append(TensorLayout(spec.name, spec.dtype, tuple(dims), axis))
    if len(fixed) > 1:
        raise ModelError(
            f"inputs fix different batch sizes ({', '.join(map(str, sorted(fixed)))}): pass --batch-axis INPUT=AXIS "
            "(or INPUT=none for an input that is not batched)"
        )
    fixed_batch = next(iter(fixed)) if fixed else None
    return InputLayout(tuple(layouts), fixed_batch, _output_axes(info, batch_names, layouts))


def _output_axes(
    info: ModelInfo, batch_names: list[str], layouts: list[TensorLayout]
) -> tuple[tuple[str, int | None], ...]:
    """Each output's batch axis from shared symbolic names, else axis 0 (the common case).
    The server checks these against real runs at start-up (``probe_output_axes``)."""
    in_names = {
        d
        for spec, t in zip(info.inputs, layouts, strict=True)
        if t.batch_axis is not None
        for d in [spec.dims[t.batch_axis]]
        if isinstance(d, str)
    }
    out: list[tuple[str, int | None]] = []
    for spec in info.output_specs:
        axis: int | None = 0 if spec.dims else None
        for i, d in enumerate(spec.dims):
            if isinstance(d, str) and (d in in_names or d in batch_names[:1]):
                axis = i
                break
        out.append((spec.name, axis))
    return tuple(out)


def probe_output_axes(
    names: Iterable[str], at1: Iterable[tuple[int, ...]], at2: Iterable[tuple[int, ...]]
) -> tuple[tuple[str, int | None], ...]:
    """Batch axis of each output from its shapes at batch 1 and batch 2: the axis
    that doubled (None when the output does not grow with the batch)."""
    out: list[tuple[str, int | None]] = []
    for name, a, b in zip(names, at1, at2, strict=True):
        grown = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if y == 2 * x and x > 0]
        out.append((name, grown[0] if len(a) == len(b) and grown else None))
    return tuple(out)
