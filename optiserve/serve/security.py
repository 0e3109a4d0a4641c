"""Who may call the server, and how often: bearer tokens and a per-client rate limit.

Tokens come from a file (one a line, ``#`` comments), never from a flag that
``ps`` would show; each is compared with ``hmac.compare_digest`` so a wrong
token's timing says nothing about the right one. Health probes
(``/v2/health/*``) and ``/metrics`` stay open, as kubelet and Prometheus call
them without credentials. The rate limit is a token bucket per client address
(``rate`` per second, ``burst`` at once): past it, 429 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from optiserve.errors import UsageError

OPEN_PREFIXES = ("/v2/health/", "/metrics")


@dataclass(frozen=True)
class AccessPolicy:
    tokens: tuple[bytes, ...] = ()  # empty: no authentication
    rate: float = 0.0  # requests per second per client; 0: unlimited
    burst: int = 0  # bucket size; 0: max(1, rate)

    @classmethod
    def from_token_file(cls, path: Path | None, rate: float = 0.0, burst: int = 0) -> AccessPolicy:
        if rate < 0 or burst < 0:
            raise UsageError("the rate limit and its burst must be >= 0")
        if path is None:
            return cls((), rate, burst)
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
        tokens = tuple(t.strip().encode() for t in lines if t.strip() and not t.strip().startswith("#"))
        if not tokens:
            raise UsageError(f"the token file {path} holds no token")
        return cls(tokens, rate, burst)


def authorized(policy: AccessPolicy, path: str, authorization: bytes | None) -> bool:
    if not policy.tokens or path.startswith(OPEN_PREFIXES):
        return True
    if authorization is None or authorization[:7].lower() != b"bearer ":
        return False
    given = authorization[7:].strip()
    ok = False
    for token in policy.tokens:  # every token compared: the count of tokens is all timing can tell
        ok |= hmac.compare_digest(given, token)
    return ok


class RateLimiter:
    """Token buckets per client, the least recently seen forgotten past ``max_clients``."""

    def __init__(self, rate: float, burst: int = 0, max_clients: int = 65536) -> None:
        self.rate = rate
        self.burst = float(burst or max(1.0, rate))
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        level, last = self._buckets.pop(client, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        ok = level >= 1.0
        self._buckets[client] = (level - 1.0 if ok else level, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return ok
