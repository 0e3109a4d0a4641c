import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from optiserve.types import Precision
from optiserve.variants.cache import VariantCache, default_cache_dir
from optiserve.variants.recipe import VariantRecipe
from tests.variants.helpers import slow_to_calibrate


def test_put_then_get(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)
    assert cache.get("k") is None

    def build(tmp: Path, work: Path) -> dict[str, object]:
        tmp.write_bytes(b"model")
        return {"method": "m", "build_s": 1.0}

    path, meta = cache.put("k", build)
    assert path.read_bytes() == b"model" and meta["method"] == "m"
    hit = cache.get("k")
    assert hit is not None and hit[0] == path and cache.entries() == ["k"]


def test_a_build_that_dies_leaves_nothing_reusable(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)

    def dies(tmp: Path, work: Path) -> dict[str, object]:
        tmp.write_bytes(b"half a mod")
        raise KeyboardInterrupt  # a Ctrl-C or crash mid-build

    with pytest.raises(KeyboardInterrupt):
        cache.put("k", dies)
    assert cache.get("k") is None
    assert [p.name for p in cache.dir.iterdir()] == []  # no scratch left either


def test_model_without_metadata_is_not_an_entry(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)
    cache.dir.mkdir(parents=True)
    (cache.dir / "k.onnx").write_bytes(b"orphan from a killed build")
    assert cache.get("k") is None


def test_cache_key_covers_model_recipe_and_versions() -> None:
    r = VariantRecipe(Precision.INT8_STATIC)
    base = r.cache_key("a" * 64, {"onnxruntime": "1.0"})
    assert base == VariantRecipe(Precision.INT8_STATIC).cache_key("a" * 64, {"onnxruntime": "1.0"})
    assert base != r.cache_key("b" * 64, {"onnxruntime": "1.0"})
    assert base != r.cache_key("a" * 64, {"onnxruntime": "1.1"})
    assert base != VariantRecipe(Precision.INT8_STATIC, calibrator="entropy").cache_key(
        "a" * 64, {"onnxruntime": "1.0"}
    )
    assert base != VariantRecipe(Precision.INT8_STATIC, calibration="abc").cache_key("a" * 64, {"onnxruntime": "1.0"})
    # options that do not touch a precision do not split its cache
    d1 = VariantRecipe(Precision.INT8_DYNAMIC, calibrator="entropy").cache_key("a" * 64, {})
    assert d1 == VariantRecipe(Precision.INT8_DYNAMIC).cache_key("a" * 64, {})


def test_default_cache_dir_respects_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPTISERVE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("OPTISERVE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "optiserve"


def test_an_entry_holds_its_data_files_and_needs_all_of_them(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)

    def build(model: Path, work: Path) -> dict[str, object]:
        (work / "scratch.bin").write_bytes(b"tool litter")  # removed with the scratch folder
        (model.parent / f"{model.name}.data").write_bytes(b"weights")
        model.write_bytes(b"graph")
        return {"method": "m", "build_s": 1.0}

    path, meta = cache.put("k", build)
    assert path == cache.dir / "k.onnx" and meta["files"] == ["k.onnx", "k.onnx.data"]
    assert cache.files("k", meta) == (cache.dir / "k.onnx", cache.dir / "k.onnx.data")
    assert sorted(p.name for p in cache.dir.iterdir()) == ["k.json", "k.onnx", "k.onnx.data"]
    (cache.dir / "k.onnx.data").unlink()
    assert cache.get("k") is None  # a graph without its weights is no entry


def test_a_build_may_not_publish_foreign_files(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)

    def build(model: Path, work: Path) -> dict[str, object]:
        model.write_bytes(b"graph")
        (model.parent / "other.onnx").write_bytes(b"?")
        return {"method": "m", "build_s": 1.0}

    with pytest.raises(ValueError, match=r"other\.onnx"):
        cache.put("k", build)
    assert list(cache.dir.iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_scratch_of_a_dead_build_is_swept_by_the_next(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)
    cache.dir.mkdir(parents=True)
    dead = cache.dir / ".k1.abc"
    (dead / "work").mkdir(parents=True)
    (dead / "work" / "augmented_model.onnx").write_bytes(b"x" * 1000)
    (dead / "owner").write_text(f"{_dead_pid()} {socket.gethostname()}\n")
    live = cache.dir / ".k2.def"
    live.mkdir()
    (live / "owner").write_text(f"{os.getpid()} {socket.gethostname()}\n")
    fresh = cache.dir / ".k3.ghi"  # its owner has not written the marker yet
    fresh.mkdir()

    def build(model: Path, work: Path) -> dict[str, object]:
        model.write_bytes(b"graph")
        return {"method": "m", "build_s": 1.0}

    cache.put("k", build)
    left = sorted(p.name for p in cache.dir.iterdir())
    assert left == [".k2.def", ".k3.ghi", "k.json", "k.onnx"]


def test_a_killed_caller_leaves_a_scratch_the_next_build_sweeps(tmp_path: Path) -> None:
    """SIGKILL the process that called ``build_variant`` mid-build: its builder stops on its
    own (it does not finish) and the scratch folder left behind goes with the next build."""
    model = slow_to_calibrate(tmp_path / "chain.onnx")
    script = tmp_path / "caller.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from optiserve.models.graph import inspect_model
            from optiserve.models.inputs import make_inputs
            from optiserve.types import Precision
            from optiserve.variants.build import build_variant
            from optiserve.variants.cache import VariantCache
            from optiserve.variants.recipe import VariantRecipe
            m = Path({str(model)!r})
            info = inspect_model(m)
            build_variant(m, info.sha256, VariantRecipe(Precision.INT8_STATIC), VariantCache(Path({str(tmp_path)!r})),
                          lambda: (make_inputs(info, 8, seed=i) for i in range(4)))
            """
        )
    )
    caller = psutil.Popen([sys.executable, str(script)])
    builder = None
    try:
        deadline = time.monotonic() + 120
        while builder is None and time.monotonic() < deadline and caller.poll() is None:
            builder = next((p for p in caller.children() if "_child" in " ".join(p.cmdline())), None)
            time.sleep(0.05)
        assert builder is not None, "the build process never started"
        caller.kill()
        caller.wait()
        builder.wait(timeout=60)  # it notices its parent is gone
    finally:
        if caller.poll() is None:
            caller.kill()
    cache = VariantCache(tmp_path)
    left = [p for p in cache.dir.iterdir() if p.name.startswith(".")]
    assert len(left) == 1 and not (left[0] / "work" / "result.json").exists()  # stopped, not finished
    assert cache.sweep() == [left[0].name] and list(cache.dir.iterdir()) == []
