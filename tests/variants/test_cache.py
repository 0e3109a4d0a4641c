from pathlib import Path

import pytest

from optiserve.types import Precision
from optiserve.variants.cache import VariantCache, default_cache_dir
from optiserve.variants.recipe import VariantRecipe


def test_put_then_get(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)
    assert cache.get("k") is None

    def build(tmp: Path) -> dict[str, object]:
        tmp.write_bytes(b"model")
        return {"method": "m", "build_s": 1.0}

    path, meta = cache.put("k", build)
    assert path.read_bytes() == b"model" and meta["method"] == "m"
    hit = cache.get("k")
    assert hit is not None and hit[0] == path and cache.entries() == ["k"]


def test_a_build_that_dies_leaves_nothing_reusable(tmp_path: Path) -> None:
    cache = VariantCache(tmp_path)

    def dies(tmp: Path) -> dict[str, object]:
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
