"""The search on a real PostgreSQL server: several workers on one study, one of them killed.

The kill is made deterministic with SIGSTOP: a worker is frozen, and only if it
is frozen *inside* a trial (a RUNNING trial carries its pid from the trial's
first line) is it SIGKILLed; otherwise it is let go and another moment tried.
So the test always exercises Optuna's heartbeat and failed-trial retry.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from optiserve.errors import UsageError
from optiserve.models.zoo import build_zoo
from optiserve.plan.planner import PlanOptions, make_plan
from optiserve.plan.storage import open_storage

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "reference" / "cnn-default"
SLA = """
defaults: {regions: [EU], headroom: 0.2}
models:
  cnn: {profile: PROFILE, model: MODEL, rate: 150, peak_factor: 1.5, p99_ms: 60, max_accuracy_drop: 0.01}
search: {max_delay_ms: [0, 2, 5], instances: [1, 2]}
"""
DRIVER = """
import json, sys
from pathlib import Path
from optiserve.plan.planner import PlanOptions, make_plan
sla, url, trials, out = sys.argv[1:5]
opts = PlanOptions(Path(sla), trials=int(trials), storage=url, workers=3, heartbeat_s=1,
                   requests=5000, verify_requests=20000, alternatives=2)
Path(out).write_text(json.dumps(make_plan(opts)))
"""
State = optuna.trial.TrialState
COMPLETE, RUNNING, FAIL = State.COMPLETE, State.RUNNING, State.FAIL


@pytest.fixture(scope="module")
def sla(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    cnn = build_zoo(root, ["cnn"])[0]
    p = root / "sla.yaml"
    p.write_text(SLA.replace("MODEL", str(cnn)).replace("PROFILE", str(PROFILE)))
    return p


def _kill_a_worker_mid_trial(url: str, parent: subprocess.Popen[str]) -> tuple[int, int, list[int]]:
    """(pid, the trial it died in, its trials finished before): SIGKILL a worker frozen inside a trial."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and parent.poll() is None:
        names = optuna.get_all_study_names(url)
        if not names:
            time.sleep(0.2)
            continue
        trials = optuna.load_study(study_name=names[0], storage=url).get_trials(deepcopy=False)
        pids = {t.user_attrs["pid"] for t in trials if "pid" in t.user_attrs} - {parent.pid}
        if len([t for t in trials if t.state == COMPLETE]) < 10 or not pids:
            time.sleep(0.05)
            continue
        for pid in sorted(pids):
            os.kill(pid, signal.SIGSTOP)
            now = optuna.load_study(study_name=names[0], storage=url).get_trials(deepcopy=False)
            inside = [t.number for t in now if t.state == RUNNING and t.user_attrs.get("pid") == pid]
            if inside:
                done = [t.number for t in now if t.state == COMPLETE and t.user_attrs.get("pid") == pid]
                os.kill(pid, signal.SIGKILL)
                return pid, inside[0], done
            os.kill(pid, signal.SIGCONT)
    pytest.fail("never caught a worker inside a trial")


def test_a_killed_worker_loses_no_finished_trial_and_the_study_ends(sla: Path, pg_url: str, tmp_path: Path) -> None:
    trials = 240
    out = tmp_path / "plan.json"
    parent = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(sla), pg_url, str(trials), str(out)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid, killed_in, finished_before = _kill_a_worker_mid_trial(pg_url, parent)
        _, stderr = parent.communicate(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, stderr[-2000:]
    plan = json.loads(out.read_text())
    search = plan["models"][0]["search"]
    assert {"pid": pid, "exitcode": -signal.SIGKILL} in search["workers_lost"]
    study = optuna.load_study(study_name=search["study_name"], storage=pg_url)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    complete = [t for t in by_number.values() if t.state == COMPLETE]
    assert len(complete) >= trials and search["trials"] == len(complete)
    assert all(by_number[n].state == COMPLETE for n in finished_before)  # the dead worker's work is kept
    assert by_number[killed_in].state == FAIL  # its heartbeat stopped: failed, not left RUNNING forever
    retried = [
        t
        for t in by_number.values()
        if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_in
    ]
    # the same candidate queued again: every parameter the dead trial had drawn (a kill in the
    # middle of its suggestions leaves only some; the retry draws the rest)
    assert retried and by_number[killed_in].params.items() <= retried[0].params.items()
    # the two other workers carried on (the killed one may have finished none: under load it can be the
    # last to start, and it is killed once 10 trials are done by anyone)
    assert len({t.user_attrs["pid"] for t in complete} - {pid}) >= 2
    # the same trial budget on one worker and SQLite: the shared study is no worse
    single = make_plan(
        PlanOptions(
            sla,
            trials=trials,
            storage=f"sqlite:///{tmp_path / 'one.db'}",
            requests=5000,
            verify_requests=20000,
            alternatives=2,
        )
    )
    assert plan["feasible"] and single["feasible"]
    assert plan["models"][0]["chosen"]["cost_usd_per_hour"] <= single["models"][0]["chosen"]["cost_usd_per_hour"]


def test_a_resumed_postgres_study_counts_its_past_trials(sla: Path, pg_url: str) -> None:
    base = {"requests": 5000, "verify_requests": 20000, "alternatives": 1, "storage": pg_url}
    first = make_plan(PlanOptions(sla, trials=12, **base))  # type: ignore[arg-type]
    second = make_plan(PlanOptions(sla, trials=20, **base))  # type: ignore[arg-type]
    name = second["models"][0]["search"]["study_name"]
    assert name == first["models"][0]["search"]["study_name"]
    done = optuna.load_study(study_name=name, storage=pg_url).get_trials(states=(COMPLETE,))
    assert len(done) == 20 and second["models"][0]["search"]["trials"] == 20


def test_an_unreachable_database_is_one_line(postgres_server: object) -> None:
    url = "postgresql+psycopg2://someone:secret@127.0.0.1:1/nowhere"
    with pytest.raises(UsageError, match="cannot open study storage") as info:
        open_storage(url)
    assert "\n" not in str(info.value) and "secret" not in str(info.value)
