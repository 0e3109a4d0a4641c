"""The study's storage: Optuna's own RDB storage, with its heartbeat and failed-trial retry.

One machine: SQLite (a file). Many: any SQLAlchemy URL, PostgreSQL in practice
(``optiserve[postgres]`` brings the driver). Every worker's running trial beats
a heartbeat into the database; a trial whose worker stopped beating (killed,
out of memory, its node gone) is marked FAIL by whichever worker starts a trial
next (Optuna does this in ``optimize``), and ``RetryHeartbeatStaleTrialCallback``
enqueues the same parameters again, so the candidate is still judged. Nothing
here reimplements that: it only configures the engine.
"""

from __future__ import annotations

import warnings
from typing import Any

from optiserve.errors import UsageError

HEARTBEAT_S = 10  # a running trial's pulse; a trial silent for GRACE_FACTOR pulses is dead
GRACE_FACTOR = 3
MAX_RETRY = 2  # a candidate that kills its worker twice more is left failed, not retried forever
_DRIVERS = {"psycopg2": "postgres", "psycopg": "postgres", "pymysql": "mysql", "MySQLdb": "mysql"}


def grace_s(heartbeat_s: int) -> int:
    """Seconds without a heartbeat after which a running trial counts as dead."""
    return GRACE_FACTOR * heartbeat_s


def open_storage(url: str | None, heartbeat_s: int = HEARTBEAT_S) -> Any:
    """An ``optuna.storages.RDBStorage`` for ``url`` (None: in memory); a bad URL, an unreachable
    server or a missing driver is one line naming what to fix."""
    if url is None:
        return None
    import optuna

    if heartbeat_s < 1:
        raise UsageError("the study heartbeat must be at least 1 second")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # the heartbeat has been "experimental" since Optuna 2.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s(heartbeat_s),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            )
    except ModuleNotFoundError as exc:
        extra = _DRIVERS.get(str(exc.name).split(".")[0], "")
        hint = f": pip install 'optiserve[{extra}]'" if extra else ""
        raise UsageError(f"study storage {_safe(url)} needs the database driver {exc.name}{hint}") from None
    except Exception as exc:  # sqlalchemy raises many kinds for a bad URL or a server that is not there
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot open study storage {_safe(url)}: {first}") from None


def _safe(url: str) -> str:
    """The URL without its password: error lines end up in CI logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return repr(url)
    return repr(f"{scheme}://{creds.split(':', 1)[0]}:***@{host}")
