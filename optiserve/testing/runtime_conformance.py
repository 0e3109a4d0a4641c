"""What every registered ``Runtime`` must do, as pytest tests (optuna's ``pytest_storages`` idea).

The ``runtime`` fixture is parametrized over the runtime registry, so a runtime
added to ``optiserve.runtimes.registry.RUNTIMES`` is under the whole suite with no
test code of its own. A test module provides the model once::

    class TestEveryRuntime(RuntimeConformance):
        @pytest.fixture
        def model_path(self, tmp_path): ...  # an fp32 ONNX model with a dynamic batch

Contract checks that need no library run for every runtime; the rest skip with
the runtime's own availability reason. Outputs are compared with ONNX's own
reference evaluator (``onnx.reference``, pure NumPy, fp32: written by nobody
here) within ``TOLERANCE`` for the precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import OptiserveError, UnknownNameError, UsageError, VariantError
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.runtimes.base import Runtime, Session
from optiserve.runtimes.registry import REGISTRY, check_options, get_runtime
from optiserve.types import Precision

# Largest allowed |output - reference|, as a fraction of the reference's largest |value|.
# fp32 on a CPU: rounding order only. fp32 on a GPU: cuBLAS and TensorRT use TF32
# (10-bit mantissa) by default. fp16/bf16: their mantissas (10 and 7 bits). int8:
# per-tensor quantisation of weights and activations, 256 levels. int4: 16 levels.
TOLERANCE: dict[Precision, float] = {
    Precision.FP32: 1e-5,
    Precision.FP16: 5e-3,
    Precision.BF16: 3e-2,
    Precision.INT8_DYNAMIC: 5e-2,
    Precision.INT8_STATIC: 5e-2,
    Precision.INT4: 1e-1,
}
GPU_FP32_TOLERANCE = 2e-3


def tolerance(runtime: Runtime, precision: Precision) -> float:
    if precision is Precision.FP32 and runtime.device == "gpu":
        return GPU_FP32_TOLERANCE
    return TOLERANCE[precision]


def reference_outputs(model: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The fp32 model's outputs from ``onnx.reference``, not from any runtime under test."""
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(o) for o in ReferenceEvaluator(str(model)).run(None, feeds)]


def model_for(runtime: Runtime, model: Path, precision: Precision) -> Path:
    """What the profiler hands ``load``: the variant for a variant precision, else the fp32 model."""
    if precision not in runtime.variant_precisions:
        return model
    from optiserve.models.layout import infer_layout
    from optiserve.variants.calibration import build_from_recipe, recipe_for

    info = inspect_model(model)
    try:
        recipe = recipe_for(precision, toolkit=runtime.variant_toolkit)  # each runtime's own quantisation
        return build_from_recipe(model, info, infer_layout(info), recipe).path
    except VariantError as exc:
        pytest.skip(f"no {precision} variant of this model: {exc}")


class RuntimeConformance:
    @pytest.fixture(params=REGISTRY.names())
    def runtime(self, request: pytest.FixtureRequest) -> Runtime:
        return get_runtime(str(request.param))

    @pytest.fixture
    def model_path(self) -> Path:
        raise NotImplementedError("provide a `model_path` fixture")

    @pytest.fixture
    def usable(self, runtime: Runtime) -> Runtime:
        reason = REGISTRY.reason(runtime.name)
        if reason is not None:
            pytest.skip(f"{runtime.name} unavailable here: {reason}")
        return runtime

    def _session(self, runtime: Runtime, model_path: Path, threads: int = 1) -> Session:
        return runtime.load(model_path, Precision.FP32, threads, {})

    # -- the contract's static half: every runtime, available or not -------------------------

    def test_is_a_runtime_and_registered(self, runtime: Runtime) -> None:
        assert isinstance(runtime, Runtime)
        assert get_runtime(runtime.name) is runtime
        assert runtime.name == runtime.name.strip().lower() and runtime.device in ("cpu", "gpu")

    def test_available_returns_none_or_one_line(self, runtime: Runtime) -> None:
        reason = runtime.available()
        assert reason is None or (isinstance(reason, str) and reason.strip() and "\n" not in reason)

    def test_supports_fp32(self, runtime: Runtime) -> None:
        assert runtime.supports(Precision.FP32)

    def test_variant_precisions_are_supported(self, runtime: Runtime) -> None:
        assert Precision.FP32 not in runtime.variant_precisions
        assert all(runtime.supports(p) for p in runtime.variant_precisions)

    def test_defaults_are_valid_options(self, runtime: Runtime) -> None:
        assert set(runtime.defaults) == set(runtime.options)  # every knob has a default the profile records
        assert check_options(runtime, dict(runtime.defaults)) == dict(runtime.defaults)

    def test_unknown_option_lists_valid_names(self, runtime: Runtime) -> None:
        with pytest.raises(UnknownNameError) as exc:
            check_options(runtime, {"no_such_knob": "1"})
        assert str(exc.value).count("\n") == 0
        for name in runtime.options:
            assert name in str(exc.value)

    def test_bad_option_values_are_one_line(self, runtime: Runtime) -> None:
        for key, valid in runtime.options.items():
            bad: list[object] = ["no-such-value", 1.5, True] if valid else ["x", "-1", "1.5", 2.0, None]
            for value in bad:
                with pytest.raises(UsageError) as exc:
                    check_options(runtime, {key: value})
                assert key in str(exc.value) and "\n" not in str(exc.value), (key, value)
                if valid and isinstance(value, str):
                    assert all(v in str(exc.value) for v in valid)
            if not valid:
                assert check_options(runtime, {key: 3})[key] == "3"  # a YAML integer is its text

    def test_load_refuses_bad_options_before_loading(self, runtime: Runtime, model_path: Path) -> None:
        """A typo in a knob is not silently ignored and not a ``KeyError`` from inside the back end."""
        bad: list[dict[str, str]] = [{"no_such_knob": "1"}]
        bad += [{key: "no-such-value" if valid else "x"} for key, valid in runtime.options.items()]
        for options in bad:
            with pytest.raises(UsageError):
                runtime.load(model_path, Precision.FP32, 1, options)

    # -- the dynamic half: where the runtime can run ------------------------------------------

    def test_versions_name_the_library(self, usable: Runtime) -> None:
        versions = usable.versions()
        assert versions and all(isinstance(v, str) and v for v in versions.values())

    @pytest.mark.parametrize("precision", list(Precision), ids=str)
    def test_outputs_match_the_reference(self, usable: Runtime, model_path: Path, precision: Precision) -> None:
        if not usable.supports(precision):
            pytest.skip(f"{usable.name} does not run {precision}")
        info = inspect_model(model_path)
        session = usable.load(model_for(usable, model_path, precision), precision, 1, {})
        assert set(session.input_names) == {i.name for i in info.inputs}
        assert list(session.output_names) == list(info.outputs)  # the graph's order
        tol = tolerance(usable, precision)
        for batch in (1, 3):
            feeds = make_inputs(info, batch, seed=batch)
            outs = session.run(feeds)
            ref = reference_outputs(model_path, feeds)
            assert len(outs) == len(ref)
            for name, out, want in zip(session.output_names, outs, ref, strict=True):
                assert out.shape == want.shape, name
                scale = float(np.abs(want).max()) or 1.0
                err = float(np.abs(out.astype(np.float64) - want).max())
                assert err <= tol * scale, f"{name} at {precision}: max error {err:.3g}, allowed {tol * scale:.3g}"
        session.close()

    def test_batch_rows_are_independent(self, usable: Runtime, model_path: Path) -> None:
        info = inspect_model(model_path)
        session = self._session(usable, model_path)
        feeds = make_inputs(info, 4, seed=3)
        whole = session.run(feeds)[0]
        one = session.run({k: v[2:3] for k, v in feeds.items()})[0]
        np.testing.assert_allclose(whole[2:3], one, rtol=1e-4, atol=1e-5)

    def test_repeated_runs_are_deterministic(self, usable: Runtime, model_path: Path) -> None:
        info = inspect_model(model_path)
        session = self._session(usable, model_path, threads=1)
        feeds = make_inputs(info, 2)
        first = session.run(feeds)
        for _ in range(3):
            again = session.run(feeds)
            for a, b in zip(first, again, strict=True):
                np.testing.assert_array_equal(a, b)

    def test_every_thread_count_loads(self, usable: Runtime, model_path: Path) -> None:
        for threads in (1, 2):
            self._session(usable, model_path, threads).close()

    def test_unsupported_precision_is_an_optiserve_error(self, usable: Runtime, model_path: Path) -> None:
        unsupported = [p for p in Precision if not usable.supports(p)]
        if not unsupported:
            pytest.skip("runtime supports every precision")
        with pytest.raises(OptiserveError):
            usable.load(model_path, unsupported[0], 1, {})

    def test_bad_model_is_an_optiserve_error(self, usable: Runtime, tmp_path: Path) -> None:
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"not a model")
        with pytest.raises(OptiserveError):
            usable.load(bad, Precision.FP32, 1, {})
