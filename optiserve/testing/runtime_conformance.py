"""What every ``Runtime`` must do, as pytest tests (optuna's ``pytest_storages`` idea).

Use it by subclassing in a test module and providing two fixtures::

    class TestMyRuntime(RuntimeConformance):
        @pytest.fixture
        def runtime(self): return MyRuntime()
        @pytest.fixture
        def model_path(self, tmp_path): ...  # an fp32 ONNX model with a dynamic batch

A runtime that is unavailable here skips with its own reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import OptiserveError, UnknownNameError
from optiserve.models.graph import inspect_model
from optiserve.models.inputs import make_inputs
from optiserve.runtimes.base import Runtime, Session
from optiserve.runtimes.registry import check_options, get_runtime
from optiserve.types import Precision


class RuntimeConformance:
    @pytest.fixture
    def runtime(self) -> Runtime:
        raise NotImplementedError("provide a `runtime` fixture")

    @pytest.fixture
    def model_path(self) -> Path:
        raise NotImplementedError("provide a `model_path` fixture")

    @pytest.fixture
    def usable(self, runtime: Runtime) -> Runtime:
        reason = runtime.available()
        if reason is not None:
            pytest.skip(f"{runtime.name} unavailable here: {reason}")
        return runtime

    def _session(self, runtime: Runtime, model_path: Path, threads: int = 1) -> Session:
        return runtime.load(model_path, Precision.FP32, threads, {})

    def test_is_a_runtime_and_registered(self, runtime: Runtime) -> None:
        assert isinstance(runtime, Runtime)
        assert get_runtime(runtime.name) is not None
        assert runtime.name == runtime.name.strip().lower()

    def test_available_returns_none_or_reason(self, runtime: Runtime) -> None:
        reason = runtime.available()
        assert reason is None or (isinstance(reason, str) and reason.strip())

    def test_supports_fp32(self, runtime: Runtime) -> None:
        assert runtime.supports(Precision.FP32)

    def test_variant_precisions_are_supported(self, runtime: Runtime) -> None:
        assert Precision.FP32 not in runtime.variant_precisions
        assert all(runtime.supports(p) for p in runtime.variant_precisions)

    def test_defaults_are_valid_options(self, runtime: Runtime) -> None:
        assert set(runtime.defaults) <= set(runtime.options)
        assert check_options(runtime, dict(runtime.defaults)) == dict(runtime.defaults)

    def test_unknown_option_lists_valid_names(self, runtime: Runtime) -> None:
        with pytest.raises(UnknownNameError) as exc:
            check_options(runtime, {"no_such_knob": "1"})
        for name in runtime.options:
            assert name in str(exc.value)

    def test_versions_name_the_library(self, usable: Runtime) -> None:
        versions = usable.versions()
        assert versions and all(isinstance(v, str) and v for v in versions.values())

    def test_run_returns_outputs_per_batch(self, usable: Runtime, model_path: Path) -> None:
        info = inspect_model(model_path)
        session = self._session(usable, model_path)
        assert set(session.input_names) == {i.name for i in info.inputs}
        for batch in (1, 3):
            outs = session.run(make_inputs(info, batch))
            assert len(outs) == len(session.output_names) == len(info.outputs)
            assert all(o.shape[0] == batch for o in outs)
            assert all(np.isfinite(o).all() for o in outs if o.dtype.kind == "f")
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
