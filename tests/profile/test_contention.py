"""More threads slower than fewer: found in the busy reference, not in the quiet one."""

from __future__ import annotations

from pathlib import Path

from optiserve.profile.contention import contended
from optiserve.profile.store import load_profile
from optiserve.profile.summary import warnings_block

MACHINES = Path(__file__).resolve().parents[2] / "profiles" / "reference" / "machines"


def test_the_busy_sapphire_rapids_reference_is_flagged_and_said_so() -> None:
    prof = load_profile(MACHINES / "sapphire-rapids-2vcpu" / "cnn")
    found = contended(prof)
    assert found and all(c.config.threads == 2 and c.fewer == 1 and c.ratio > 1.1 for c in found)
    assert {(c.config.precision.value, c.config.batch_size) for c in found} >= {("fp32", 1), ("fp32", 8)}
    assert "measure contention" in warnings_block(prof).plain


def test_the_quiet_zen3_reference_is_not() -> None:
    for model in ("cnn", "encoder"):
        assert contended(load_profile(MACHINES / "zen3-2vcpu" / model)) == []


def test_a_tighter_threshold_finds_more_never_fewer() -> None:
    prof = load_profile(MACHINES / "sapphire-rapids-2vcpu" / "encoder")
    assert len(contended(prof, slower=1.0)) >= len(contended(prof)) > 0
