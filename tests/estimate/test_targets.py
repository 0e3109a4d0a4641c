from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optiserve.errors import CatalogError
from optiserve.estimate.catalog import load_catalog
from optiserve.estimate.graph_cost import GraphCost, graph_cost
from optiserve.estimate.source import match_source
from optiserve.estimate.targets import LAUNCH_S, CurveBuilder, cpu_ceiling, device_ceiling
from optiserve.types import BenchConfig, Measurement, Precision, Profile, Status

CPU = """{{model: x, arch: x86_64, generation: {gen}, threads_per_core: 2, ghz: {ghz},
          fp32_flops_per_cycle_per_core: 32, int8_ops_per_cycle_per_core: 128,
          bf16_flops_per_cycle_per_core: 32, memory_bandwidth_gbs: {bw}}}"""
PRICE = "[{region: lab-1, on_demand_usd_per_hour: 1.0, source: https://lab.example, as_of: 2026-01-01}]"
CATALOG = f"""
provider: lab
regions: {{lab-1: {{provider: lab, country: DE, geo: [EU]}}}}
instances:
  - {{name: src, family: s, vcpus: 4, memory_gib: 16, prices: {PRICE},
     cpu: {CPU.format(gen="zen3", ghz=2.0, bw=20)}}}
  - {{name: fast, family: s, vcpus: 4, memory_gib: 16, prices: {PRICE},
     cpu: {CPU.format(gen="zen3", ghz=4.0, bw=50)}}}
  - name: gpu
    family: g
    vcpus: 8
    memory_gib: 32
    prices: {PRICE}
    cpu: {CPU.format(gen="zen3", ghz=2.0, bw=20)}
    accelerator: {{model: G1, kind: gpu, count: 1, memory_gib: 16, fp32_tflops: 10, fp16_tflops: 80,
                  int8_tops: 160, memory_bandwidth_gbs: 300, interconnect_gbs: 16, spec_source: https://lab.example}}
"""
E, D = 0.5, 2e-4  # the synthetic truth: efficiency and per-call overhead


@pytest.fixture
def lab(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "lab.yaml"
    p.write_text(CATALOG)
    return load_catalog([p], builtin=False)


def _profile(model: Path, catalog, threads: int = 2) -> Profile:  # type: ignore[no-untyped-def]
    src = catalog.get("src")
    rows = []
    for b in (1, 4, 16):
        ceil = cpu_ceiling(src, threads, "fp32")
        t = ceil.roofline_s(graph_cost(model, b)) / E + D
        jitter = np.random.default_rng(b).normal(1.0, 0.02, 400).clip(0.9, 1.1)
        samples = tuple(round(t * 1e9 * j) for j in jitter)
        rows.append(
            Measurement(BenchConfig("onnxruntime-cpu", Precision.FP32, b, threads), Status.OK, samples_ns=samples)
        )
    return Profile({"hardware": {"cpu_flags": ["avx2"]}}, tuple(rows))


def test_transfer_recovers_a_known_answer_on_faster_cpu(mlp_path: Path, lab) -> None:  # type: ignore[no-untyped-def]
    prof = _profile(mlp_path, lab)
    builder = CurveBuilder(prof, mlp_path, lab, lab.get("src"))
    curve = builder.curve(lab.get("fast"), "fp32", 2)
    assert curve.predicted and curve.band >= 0.2 and "same CPU generation" in curve.basis
    fast = cpu_ceiling(lab.get("fast"), 2, "fp32")
    for b, m in zip((1, 4, 16), prof.measurements, strict=True):
        want = fast.roofline_s(graph_cost(mlp_path, b)) / E + D
        # the measured jitter is carried over: compare means, which the jitter moves by < 0.5%
        mean_src = np.mean(m.samples_ns) / 1e9
        ceil = cpu_ceiling(lab.get("src"), 2, "fp32")
        truth_src = ceil.roofline_s(graph_cost(mlp_path, b)) / E + D
        assert curve.service.mean(b) == pytest.approx(want * mean_src / truth_src, rel=0.02)
        assert curve.service.mean(b) < mean_src  # faster machine, faster service


def test_gpu_target_pays_launches_and_the_host_link(mlp_path: Path, lab) -> None:  # type: ignore[no-untyped-def]
    builder = CurveBuilder(_profile(mlp_path, lab), mlp_path, lab, lab.get("src"))
    gpu = lab.get("gpu")
    fp32 = builder.curve(gpu, "fp32", 2)
    c = graph_cost(mlp_path, 1)
    dev = device_ceiling(gpu, 1, "fp32")
    floor = D + len(c.nodes) * LAUNCH_S + 2 * c.io_bytes / 16e9 + c.roofline_s(dev.flops_per_s, dev.bytes_per_s) / E
    assert fp32.service.mean(1) == pytest.approx(floor, rel=0.05)
    assert fp32.predicted and fp32.band >= 0.5 and fp32.memory_gib > 0.5
    shared = builder.curve(gpu, "fp32", 2, share=4)
    assert shared.service.mean(16) >= fp32.service.mean(16)  # a quarter of the device is not faster


def test_measured_machine_wins_over_prediction(mlp_path: Path, lab) -> None:  # type: ignore[no-untyped-def]
    prof = _profile(mlp_path, lab)
    builder = CurveBuilder(prof, mlp_path, lab, lab.get("src"), measured_on_source=True)
    curve = builder.curve(lab.get("src"), "fp32", 2)
    assert not curve.predicted and curve.band == 0 and "measured" in curve.basis
    np.testing.assert_allclose(curve.service.samples[4], np.asarray(prof.measurements[1].samples_ns) / 1e9)


def test_source_matched_from_cpu_flags() -> None:
    cat = load_catalog()
    assert match_source({"cpu_flags": ["avx2", "avx512f", "avx512_vnni", "amx_int8"]}, cat).instance.cpu.generation in (
        "sapphire-rapids",
        "emerald-rapids",
        "granite-rapids",
    )
    assert match_source({"arch": "aarch64", "cpu_flags": ["asimd", "sve"]}, cat).instance.cpu.arch == "arm64"
    with pytest.raises(CatalogError, match="--measured-on"):  # an ARM core of unknown generation
        match_source({"arch": "aarch64", "cpu_flags": []}, cat)
    with pytest.raises(CatalogError, match="--measured-on"):
        match_source({"cpu_flags": ["sse2"]}, cat)


def _family_rows(base: Profile, recipe: tuple[tuple[str, str], ...], drop: float, slow: float) -> list[Measurement]:
    """Copies of ``base``'s rows as int8-static rows of one calibration recipe."""
    from dataclasses import replace

    from optiserve.types import AccuracyReport

    acc = AccuracyReport(64, 0, 0.1, drop, 0.99, None, None, None, drop, "relative-l2", True)
    rows = []
    for m in base.measurements:
        cfg = replace(m.config, precision=Precision.INT8_STATIC, variant=recipe)
        samples = tuple(int(s * slow) for s in m.samples_ns)
        rows.append(replace(m, config=cfg, samples_ns=samples, accuracy=acc, variant={"key": f"k{drop}"}))
    return rows


def test_rows_differing_in_recipe_are_separate_families_not_overwritten(mlp_path: Path, lab) -> None:  # type: ignore[no-untyped-def]
    """Two calibrators at one (precision, threads): the curve is made of one recipe's rows
    (the smaller drop), never a mix, and the basis names it."""
    base = _profile(mlp_path, lab)
    minmax = _family_rows(base, (("calibrator", "minmax"),), drop=0.05, slow=1.0)
    entropy = _family_rows(base, (("calibrator", "entropy"),), drop=0.01, slow=1.5)
    prof = Profile(base.meta, (*base.measurements, *minmax, *entropy))
    builder = CurveBuilder(prof, mlp_path, lab, lab.get("src"), measured_on_source=True)
    fam = builder.family("int8-static", 2)
    assert fam.variant == (("calibrator", "entropy"),)
    curve = builder.curve(lab.get("src"), "int8-static", 2)
    np.testing.assert_allclose(curve.service.samples[4], np.asarray(entropy[1].samples_ns) / 1e9)
    assert "of 2 profiled configs" in curve.basis and "calibrator=entropy" in curve.basis
    assert builder.accuracy_drop("int8-static") == pytest.approx(0.01)
    # the planner ships that recipe's file, not the first int8 row's
    from optiserve.plan.artifact import artifact_for

    prof_rows = [m for m in prof.measurements if m.config.variant == fam.variant]
    assert prof_rows and all(m.variant["key"] == "k0.01" for m in prof_rows)
    art = artifact_for(prof, "onnxruntime-cpu", "int8-static", fam.variant)
    assert art["variant_key"] == "k0.01"
    assert artifact_for(prof, "onnxruntime-cpu", "int8-static")["variant_key"] == "k0.05"  # first row, no recipe


def test_only_the_planned_runtimes_rows_make_curves(mlp_path: Path, lab) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    base = _profile(mlp_path, lab)
    other = tuple(
        replace(m, config=replace(m.config, runtime="openvino-cpu"), samples_ns=tuple(s * 3 for s in m.samples_ns))
        for m in base.measurements
    )
    prof = Profile(base.meta, (*other, *base.measurements))
    builder = CurveBuilder(prof, mlp_path, lab, lab.get("src"), measured_on_source=True, runtime="onnxruntime-cpu")
    curve = builder.curve(lab.get("src"), "fp32", 2)
    np.testing.assert_allclose(curve.service.samples[1], np.asarray(base.measurements[0].samples_ns) / 1e9)


def test_int8_accuracy_from_a_vnni_machine_does_not_hold_on_one_without(tmp_path: Path) -> None:
    """The Sapphire Rapids reference's int8 file has 8-bit weights: on Zen 3 (AVX2, no VNNI) its
    kernels saturate, so the measured drop is not that CPU's; the Zen 3 reference built 7-bit ones."""
    from optiserve.models.zoo import build_zoo
    from optiserve.profile.store import load_profile

    machines = Path(__file__).resolve().parents[2] / "profiles" / "reference" / "machines"
    cat = load_catalog()
    (cnn,) = build_zoo(tmp_path, ["cnn"])
    spr = CurveBuilder(load_profile(machines / "sapphire-rapids-2vcpu" / "cnn"), cnn, cat, cat.get("aws:c7i.xlarge"))
    why = spr.int8_unsafe_on(cat.get("azure:Standard_D4as_v5"), "int8-static", 1)
    assert why and "no VNNI" in why and "7-bit" in why
    assert spr.int8_unsafe_on(cat.get("aws:c7a.xlarge"), "int8-static", 1) is None  # Zen 4: AVX-512 VNNI
    assert spr.int8_unsafe_on(cat.get("azure:Standard_D4as_v5"), "fp32", 1) is None
    zen3 = CurveBuilder(load_profile(machines / "zen3-2vcpu" / "cnn"), cnn, cat, cat.get("azure:Standard_D4as_v5"))
    assert dict(zen3.family("int8-static", 1).variant).get("reduce_range") == "true"
    assert zen3.int8_unsafe_on(cat.get("gcp:n2d-standard-4"), "int8-static", 1) is None


def test_cpu_non_gemm_nodes_meet_the_fp32_rate_and_weights_the_dram_share(lab) -> None:  # type: ignore[no-untyped-def]
    src = lab.get("src")  # 4 vCPUs, 2 per core, 2.0 GHz, 32 fp32 / 128 int8 per cycle, 20 GB/s
    fp32, int8 = cpu_ceiling(src, 2, "fp32"), cpu_ceiling(src, 2, "int8")
    assert int8.vector_flops_per_s == fp32.vector_flops_per_s == fp32.flops_per_s  # Softmax is no int8 kernel
    assert int8.flops_per_s > fp32.flops_per_s
    assert fp32.dram_bytes_per_s == pytest.approx(20e9 / 2)  # half the vCPUs, half the DRAM
    # a GEMM node (no vector work) meets the int8 rate, a Softmax-like one the fp32 rate
    cost = GraphCost(1, 2e9, 0.0, nodes=((1e9, 0.0), (1e9, 0.0)), vector=(0.0, 5e8))
    want = 1e9 / int8.flops_per_s + 5e8 / fp32.flops_per_s
    assert int8.roofline_s(cost) == pytest.approx(want)


def test_int8_bands_on_a_cpu_are_wider_and_say_why(mlp_path: Path, lab) -> None:  # type: ignore[no-untyped-def]
    from optiserve.estimate.targets import BANDS, INT8_WIDENING

    builder = CurveBuilder(_profile(mlp_path, lab), mlp_path, lab, lab.get("src"))
    fp32, why32 = builder._band(lab.get("fast"), "fp32", 2)
    int8, why8 = builder._band(lab.get("fast"), "int8-static", 2)
    assert fp32 == pytest.approx(BANDS["same-generation"] + 0.10)  # the lab has no effective block: datasheet
    assert int8 == pytest.approx(fp32 + INT8_WIDENING) and "int8 +25%" in why8 and "int8" not in why32
    assert builder._band(lab.get("gpu"), "int8-static", 2)[0] == BANDS["accelerator"]  # the GPU prior's own
