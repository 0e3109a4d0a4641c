from __future__ import annotations

from pathlib import Path

import pytest

from optiserve.errors import SLAError
from optiserve.plan.sla import load_sla, parse_sla

GOOD = """
defaults: {regions: [EU], headroom: 0.1}
models:
  cnn: {rate: 100, p99_ms: 50, peak_factor: 2}
  mlp: {rate: 10, p99_ms: 5, regions: [AE], spot: true}
search: {max_delay_ms: [0, 2], instances: [1]}
"""


def test_defaults_fill_in_per_model() -> None:
    sla = parse_sla(GOOD)
    cnn, mlp = sla.resolved("cnn"), sla.resolved("mlp")
    assert cnn.regions == ("EU",) and cnn.headroom == 0.1 and cnn.peak_rate == 200 and not cnn.spot
    assert mlp.regions == ("AE",) and mlp.spot and mlp.max_accuracy_drop == 0.01
    assert sla.search.max_delay_ms == (0, 2)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("rate: 100", "rate: -3", r"model 'cnn', field rate: .*greater than 0"),
        ("p99_ms: 50, ", "", r"model 'cnn', field p99_ms: Field required"),
        ("peak_factor: 2", "peak_factor: 0.5", r"model 'cnn', field peak_factor"),
        ("spot: true", "spot: true, colour: red", r"model 'mlp', field colour: Extra inputs"),
        ("headroom: 0.1", "headroom: 1.5", r"field defaults.headroom"),
        ("instances: [1]", "instances: [0]", r"field search"),
        ("models:", "models: [", r"not valid YAML"),
    ],
)
def test_bad_sla_names_model_and_field(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(SLAError, match=message):
        parse_sla(GOOD.replace(old, new, 1))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SLAError, match="expected a mapping"):
        parse_sla("just text")
    with pytest.raises(SLAError, match="models"):
        parse_sla("models: {}")
    with pytest.raises(SLAError, match="cannot read"):
        load_sla(tmp_path / "nope.yaml")


def test_the_example_sla_is_valid() -> None:
    sla, digest = load_sla(Path(__file__).resolve().parents[2] / "examples" / "sla.yaml")
    assert "cnn" in sla.models and len(digest) == 64
