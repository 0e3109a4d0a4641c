"""The one registry: its contract, and that every pluggable family uses it the same way."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from optiserve._registry import Entry, Registry, registry_of
from optiserve.errors import RuntimeUnavailableError, UnknownNameError, UsageError


def _reg() -> Registry[str]:
    return Registry(
        "widget",
        (
            Entry("plain", lambda x="": f"plain{x}"),
            Entry("needs-gpu", lambda: "gpu", lambda: "no GPU here\n(nvidia-smi not found)"),
            Entry("broken", lambda: "b", lambda: 1 / 0),  # type: ignore[arg-type, return-value]
        ),
    )


def test_names_in_declaration_order_and_mapping_reads() -> None:
    r = _reg()
    assert r.names() == ("plain", "needs-gpu", "broken") == tuple(r) and len(r) == 3
    assert "plain" in r and "nope" not in r and 3 not in r
    assert r["plain"]() == "plain" and r.create("plain", "!") == "plain!"


def test_unknown_name_is_one_line_listing_every_valid_one() -> None:
    with pytest.raises(UnknownNameError) as exc:
        _reg().create("nope")
    assert str(exc.value) == "unknown widget 'nope'; valid widgets: plain, needs-gpu, broken"
    assert isinstance(exc.value, UsageError) and exc.value.exit_code == 2
    with pytest.raises(UnknownNameError, match="valid widgets: plain, needs-gpu, broken"):
        _reg().check_names([])
    with pytest.raises(UnknownNameError, match="'nope'"):
        _reg().check_names(["plain", "nope"])
    assert _reg().check_names(["broken", "plain"]) == ("broken", "plain")


def test_availability_is_a_one_line_reason_and_never_raises() -> None:
    r = _reg()
    assert r.availability() == {
        "plain": None,
        "needs-gpu": "no GPU here (nvidia-smi not found)",
        "broken": "ZeroDivisionError: division by zero",
    }
    assert r.require("plain") == "plain"
    with pytest.raises(RuntimeUnavailableError, match=r"^widget needs-gpu is unavailable here: no GPU here"):
        r.require("needs-gpu")


def test_names_must_be_unique_and_canonical() -> None:
    with pytest.raises(ValueError, match="twice"):
        Registry("w", (Entry("a", str), Entry("a", str)))
    for bad in ("", "Upper", " pad"):
        with pytest.raises(ValueError, match="lower case"):
            Registry("w", (Entry(bad, str),))


def test_registry_of_named_objects_returns_the_object() -> None:
    class Thing:
        description = "a thing"

        def __init__(self, name: str, reason: str | None) -> None:
            self.name, self.reason = name, reason

        def available(self) -> str | None:
            return self.reason

    a, b = Thing("a", None), Thing("b", "missing lib")
    r = registry_of("thing", [a, b])
    assert r.create("a") is a and r.reason("b") == "missing lib" and r.entry("a").description == "a thing"


def _families() -> dict[str, Registry[Any]]:
    from optiserve.emit import TARGETS
    from optiserve.estimate.arrivals import ARRIVALS
    from optiserve.plan.search import SAMPLERS
    from optiserve.preprocess import PREPROCESSORS
    from optiserve.runtimes import REGISTRY

    return {
        "runtime": REGISTRY,
        "pre-processor": PREPROCESSORS,
        "sampler": SAMPLERS,
        "arrival": ARRIVALS,
        "target": TARGETS,
    }


@pytest.mark.parametrize("kind", ["runtime", "pre-processor", "sampler", "arrival", "target"])
def test_every_family_is_a_registry_with_the_same_error(kind: str) -> None:
    reg = _families()[kind]
    assert isinstance(reg, Registry) and reg.kind == kind and len(reg) >= 3
    with pytest.raises(UnknownNameError) as exc:
        reg.create("no-such-thing")
    assert str(exc.value) == f"unknown {kind} 'no-such-thing'; valid {kind}s: {', '.join(reg)}"
    for name, reason in reg.availability().items():
        assert reason is None or (reason.strip() and "\n" not in reason), name


def test_the_public_entry_points_go_through_the_registries() -> None:
    """The names the CLI and the profiler call keep working, and refuse the same way."""
    from optiserve.emit import EmitOptions, render
    from optiserve.estimate.arrivals import make_arrivals
    from optiserve.plan.search import make_sampler
    from optiserve.preprocess import PreprocessSpec, get_preprocessor
    from optiserve.runtimes import get_runtime

    assert type(make_sampler("nsga2", 1)).__name__ == "NSGAIISampler"
    assert type(make_sampler("tpe", 1)).__name__ == "TPESampler"
    t = make_arrivals("gamma", 100.0, 2000, cv=3.0, seed=1)
    gaps = np.diff(t)
    assert t.shape == (2000,) and abs(gaps.mean() - 0.01) < 0.002 and 2.5 < gaps.std() / gaps.mean() < 3.5
    assert list(make_arrivals("trace", 0, 0, trace=[5.0, 3.0, 4.0])) == [0.0, 1.0, 2.0]
    with pytest.raises(UsageError, match="--trace FILE"):
        make_arrivals("trace", 1.0, 1)
    assert get_preprocessor("numpy", PreprocessSpec.parse("image:resize=8")).name == "numpy"
    for call, kind in (
        (lambda: make_sampler("cmaes", 0), "sampler"),
        (lambda: make_arrivals("uniform", 1.0, 1), "arrival"),
        (lambda: get_runtime("vllm"), "runtime"),
        (lambda: render({}, ["helm"], EmitOptions()), "target"),
    ):
        with pytest.raises(UnknownNameError, match=f"valid {kind}s: "):
            call()
