"""More threads slower than fewer: found in the busy recording, not in the quiet ones.

The busy one is the Sapphire Rapids reference recorded 2026-12-01 in a busy session, kept
here as a real contended profile after two quiet recordings replaced it as the reference."""

from __future__ import annotations

from pathlib import Path

from optiserve.profile.contention import contended
from optiserve.profile.store import load_profile
from optiserve.profile.summary import warnings_block

MACHINES = Path(__file__).resolve().parents[2] / "profiles" / "reference" / "machines"
BUSY = Path(__file__).resolve().parent / "data" / "busy-sapphire-rapids"


def test_the_busy_sapphire_rapids_reference_is_flagged_and_said_so() -> None:
    prof = load_profile(BUSY / "cnn")
    found = contended(prof)
    assert found and all(c.config.threads == 2 and c.fewer == 1 and c.ratio > 1.1 for c in found)
    assert {(c.config.precision.value, c.config.batch_size) for c in found} >= {("fp32", 1), ("fp32", 8)}
    assert "measure contention" in warnings_block(prof).plain


def test_the_quiet_references_are_not() -> None:
    for machine in ("zen3-2vcpu", "sapphire-rapids-2vcpu", "sapphire-rapids-2vcpu-r2"):
        for model in ("cnn", "encoder"):
            assert contended(load_profile(MACHINES / machine / model)) == [], machine


def test_a_tighter_threshold_finds_more_never_fewer() -> None:
    prof = load_profile(BUSY / "encoder")
    assert len(contended(prof, slower=1.0)) >= len(contended(prof)) > 0
