"""Ed25519 signatures: a signed plan or bundle checks; one changed, added or removed byte, or another key, does not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optiserve._signing import SignatureError, check, generate_key, sign
from optiserve.cli import app

PLAN = Path(__file__).parent / "emit" / "data" / "plan.json"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_key(tmp_path / "signer.pem")


def test_a_signed_plan_checks_and_an_edited_one_does_not(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    plan = tmp_path / "plan.json"
    shutil.copy(PLAN, plan)
    sig = sign(plan, private)
    assert sig == tmp_path / "plan.json.sig" and check(plan, public).files == 1
    doc = json.loads(plan.read_text())
    doc["models"][0]["chosen"]["replicas"] += 1
    plan.write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match=r"differs from what was signed \(changed: plan.json\)"):
        check(plan, public)


def test_another_key_or_a_forged_manifest_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    _, other_public = generate_key(tmp_path / "other.pem")
    plan = tmp_path / "plan.json"
    shutil.copy(PLAN, plan)
    sig = sign(plan, private)
    with pytest.raises(SignatureError, match="does not verify"):
        check(plan, other_public)
    forged = json.loads(sig.read_text())
    forged["files"]["plan.json"] = "0" * 64  # a manifest rewritten to match other bytes
    sig.write_text(json.dumps(forged))
    with pytest.raises(SignatureError, match="does not verify"):
        check(plan, public)


def test_a_bundle_names_what_changed(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    bundle = tmp_path / "deploy"
    res = CliRunner().invoke(app, ["emit", str(PLAN), "--target", "k8s", "-o", str(bundle), "--sign-key", str(private)])
    assert res.exit_code == 0, res.output
    assert check(bundle, public).files == 2
    (bundle / "k8s" / "cnn.yaml").write_text("kind: Deployment\n")
    (bundle / "k8s" / "extra.yaml").write_text("{}\n")
    (bundle / "k8s" / "cnn-gpu.yaml").unlink()
    with pytest.raises(
        SignatureError, match=r"changed: k8s/cnn.yaml; added: k8s/extra.yaml; removed: k8s/cnn-gpu.yaml"
    ):
        check(bundle, public)


def test_cli_keygen_sign_check_and_emit_refuses_an_unsigned_plan(tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "k.pem"
    assert runner.invoke(app, ["keygen", str(key)]).exit_code == 0
    assert (key.stat().st_mode & 0o777) == 0o600
    again = runner.invoke(app, ["keygen", str(key)])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    plan = tmp_path / "plan.json"
    shutil.copy(PLAN, plan)
    unsigned = runner.invoke(
        app, ["emit", str(plan), "--target", "k8s", "-o", str(tmp_path / "d"), "--plan-public-key", f"{key}.pub"]
    )
    assert unsigned.exit_code != 0 and "is not signed" in unsigned.output and not (tmp_path / "d").exists()
    assert runner.invoke(app, ["sign", str(plan), "--key", str(key)]).exit_code == 0
    ok = runner.invoke(app, ["check-signature", str(plan), "--public-key", f"{key}.pub"])
    assert ok.exit_code == 0 and "signature OK" in ok.output
    emitted = runner.invoke(
        app, ["emit", str(plan), "--target", "k8s", "-o", str(tmp_path / "d"), "--plan-public-key", f"{key}.pub"]
    )
    assert emitted.exit_code == 0, emitted.output
    bad = runner.invoke(app, ["check-signature", str(plan), "--public-key", str(plan)])
    assert bad.exit_code != 0 and "not a PEM public key" in bad.output
