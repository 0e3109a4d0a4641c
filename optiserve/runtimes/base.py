"""The contract every runtime back end implements.

A ``Runtime`` is stateless and cheap to construct; it is found by its ``name``
in the registry and must never import an optional library at module import
time (do it in ``available`` / ``load``).

Contract (checked by ``optiserve.testing.runtime_conformance`` over every registered runtime):

- ``available()`` returns ``None`` when the runtime can be used here, else a
  one-line reason (library missing, no device, provider failed to load). It
  never raises.
- ``supports(precision)`` is a static answer: can this back end run that
  precision at all. A precision it does not support makes ``load`` raise
  ``UsageError``; the profiler records that as a failed row, not a crash.
- ``options`` maps each runtime-specific knob to its valid values (empty tuple:
  any whole number >= 0); ``defaults`` gives every knob a value. ``load`` passes
  ``options`` through ``runtimes.options.check_options`` before anything else, so
  an unknown knob or value is a one-line ``UsageError`` (``UnknownNameError``
  listing the valid ones), never ignored and never a ``KeyError``.
- ``variant_precisions`` are the precisions the runtime runs from an ONNX
  variant that ``optiserve.variants`` builds (int8 QDQ, fp16, ...): for those,
  ``load`` receives the variant's path. For any other supported precision
  ``load`` receives the fp32 model and applies the precision itself (as
  TensorRT does with builder flags).
- ``variant_toolkit`` names the library that builds those variants
  (``onnxruntime``: ORT's quantisation tools; ``nncf``: Intel's, for OpenVINO):
  each runtime is measured with its own quantisation, and the toolkit is part of
  the variant's recipe, so of its cache key and digest.
- ``load(model, precision, threads, options, layout=None)`` returns a ready
  ``Session``; it is what the profiler times as the cold start. ``layout`` is
  the input layout the profiler feeds (batch axis per input, other dims
  resolved): back ends that fix shapes ahead of time (TensorRT's optimisation
  profiles) build from it, inferring it from the model when it is None; the
  others ignore it.
- ``Session.run(feeds)`` runs one batch and returns the outputs as NumPy
  arrays in the graph's output order. It must be safe to call repeatedly with
  the same feeds and must not copy or validate more than the back end needs
  to: the profiler times exactly this call.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from optiserve.types import InputLayout, Precision


@runtime_checkable
class Session(Protocol):
    """A loaded model ready to run batches."""

    @property
    def input_names(self) -> tuple[str, ...]: ...

    @property
    def output_names(self) -> tuple[str, ...]: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class NamedIO:
    """The input/output name properties every session repeats; subclasses set the tuples."""

    _inputs: tuple[str, ...] = ()
    _outputs: tuple[str, ...] = ()

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._outputs


@runtime_checkable
class Runtime(Protocol):
    """A back end that can load an ONNX model at a precision."""

    name: str
    description: str
    device: str  # "cpu" or "gpu": what --device selects on
    options: Mapping[str, tuple[str, ...]]
    defaults: Mapping[str, str]
    variant_precisions: frozenset[Precision]
    variant_toolkit: str  # who builds those variants: a name in variants.recipe.TOOLKITS

    def available(self) -> str | None: ...

    def supports(self, precision: Precision) -> bool: ...

    def versions(self) -> dict[str, str]: ...

    def load(
        self,
        model: Path,
        precision: Precision,
        threads: int,
        options: Mapping[str, str],
        *,
        layout: InputLayout | None = None,
    ) -> Session: ...
