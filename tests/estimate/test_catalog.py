from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from optiserve.errors import CatalogError, UnknownNameError
from optiserve.estimate.catalog import load_catalog

GOOD = """
provider: acme
regions:
  acme-eu-1: {provider: acme, country: DE, geo: [EU]}
  acme-us-1: {provider: acme, country: US, geo: [US]}
instances:
  - name: box.large
    family: box
    vcpus: 4
    memory_gib: 16
    cpu: {model: x, arch: x86_64, generation: sapphire-rapids, threads_per_core: 2, ghz: 3.0,
          fp32_flops_per_cycle_per_core: 64, int8_ops_per_cycle_per_core: 256,
          bf16_flops_per_cycle_per_core: 128, memory_bandwidth_gbs: 20}
    prices:
      - {region: acme-eu-1, on_demand_usd_per_hour: 0.30, spot_usd_per_hour: 0.10,
         source: https://acme.example/pricing, as_of: 2026-01-01}
      - {region: acme-us-1, on_demand_usd_per_hour: 0.20, source: https://acme.example/pricing, as_of: 2026-01-01}
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mine.yaml"
    p.write_text(text)
    return p


def test_builtin_catalog_covers_three_clouds_and_the_required_devices() -> None:
    cat = load_catalog()
    assert len(cat.entries) >= 30
    assert {e.provider for e in cat.entries} >= {"aws", "gcp", "azure"}
    devices = {e.accelerator.model for e in cat.entries if e.accelerator}
    for gpu in ("T4", "A10G", "L4", "L40S", "H100", "H200"):
        assert gpu in devices
    assert any(d.startswith("A100") for d in devices)
    assert any(e.accelerator and e.accelerator.kind != "gpu" for e in cat.entries), "an inference accelerator"
    assert len({e.instance.cpu.generation for e in cat.entries if e.accelerator is None}) >= 4
    for e in cat.entries:
        assert len(e.instance.prices) >= 3, e.key
        for p in e.instance.prices:
            assert p.source.startswith("http") and p.as_of.year >= 2024, (e.key, p.region)


def test_a_user_file_adds_entries_and_regions(tmp_path: Path) -> None:
    cat = load_catalog([_write(tmp_path, GOOD)])
    e = cat.get("box.large")
    assert cat.get("acme:box.large") == e
    assert cat.offer(e, ["EU"], spot=False).usd_per_hour == 0.30  # type: ignore[union-attr]
    assert cat.offer(e, ["EU"], spot=True).spot is True  # type: ignore[union-attr]
    assert cat.offer(e, [], spot=False).region == "acme-us-1"  # type: ignore[union-attr]
    assert cat.offer(e, ["AE"], spot=False) is None


def test_unknown_instance_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"valid instance types: .*aws:"):
        load_catalog().get("no-such-box")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ghz: 3.0", "ghz: -1", r"instance 'box.large', field cpu.ghz: .*greater than 0"),
        ("vcpus: 4", "vcpus: four", r"instance 'box.large', field vcpus"),
        ("    family: box\n", "", r"instance 'box.large', field family: Field required"),
        ("memory_gib: 16", "memory_gib: 16\n    colour: red", r"field colour: Extra inputs"),
        ("spot_usd_per_hour: 0.10", "spot_usd_per_hour: 0.90", r"field prices.0: .*spot price above"),
        (
            "as_of: 2026-01-01}\n      - {region: acme-us-1",
            "as_of: someday}\n      - {region: acme-us-1",
            r"prices.0.as_of",
        ),
        ("acme-us-1, on_demand", "acme-mars-1, on_demand", r"regions with no location .*acme-mars-1"),
        ("instances:", "instances: [\n", r"not valid YAML"),
    ],
)
def test_broken_files_name_the_entry_and_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(CatalogError, match=message):
        load_catalog([_write(tmp_path, GOOD.replace(old, new, 1))])


def test_missing_catalog_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog([tmp_path / "nope.yaml"])


def test_catalog_cli_lists_and_checks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from optiserve.cli import app

    res = CliRunner().invoke(app, ["catalog", "list", "--region", "EU", "--gpu"])
    assert res.exit_code == 0 and "g4dn.xlarge" in res.output and "c5.xlarge" not in res.output
    good = _write(tmp_path, GOOD)
    res = CliRunner().invoke(app, ["catalog", "check", str(good)])
    assert res.exit_code == 0 and "ok:" in res.output
    good.write_text(GOOD.replace("ghz: 3.0", "ghz: 0"))
    res = CliRunner().invoke(app, ["catalog", "check", str(good)])
    assert res.exit_code == 2 and "instance 'box.large', field cpu.ghz" in res.output and "Traceback" not in res.output


def test_unknown_provider_and_future_prices_are_warned_not_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from optiserve.cli import app

    p = tmp_path / "odd.yaml"
    tomorrow = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    p.write_text(
        f"""provider: acme-cloud
regions: {{acme-1: {{provider: acme-cloud, country: DE, geo: [EU]}}}}
instances:
  - {{name: box, family: b, vcpus: 4, memory_gib: 16,
     prices: [{{region: acme-1, on_demand_usd_per_hour: 1.0, source: https://acme.example, as_of: {tomorrow}}}],
     cpu: {{model: x, arch: x86_64, generation: zen4, threads_per_core: 2, ghz: 3.0,
           fp32_flops_per_cycle_per_core: 32, int8_ops_per_cycle_per_core: 128,
           bf16_flops_per_cycle_per_core: 64, memory_bandwidth_gbs: 20}}}}
"""
    )
    cat = load_catalog([p])
    assert any("acme-cloud" in w for w in cat.warnings) and any("acme-cloud:box" in w for w in cat.warnings)
    assert not load_catalog().warnings  # the built-in catalog has neither
    res = CliRunner().invoke(app, ["catalog", "check", str(p)])
    assert res.exit_code == 0 and "ok:" in res.output
