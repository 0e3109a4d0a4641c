"""The overload gate's AIMD limit, without a server: cuts once per window, grows by 1/limit, floors,
closes the listener at the limit, and takes pressure for a cut only when a queue stands."""

from __future__ import annotations

import pytest

from optiserve.serve.gate import BETA, ConnectionGate


class _Listener:
    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pause(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume(self) -> None:
        self.paused = False
        self.calls.append("resume")


def _gate(**kw: object) -> tuple[ConnectionGate, _Listener, list[int]]:
    """A gate on a fake listener, and the connections open (one request in flight each unless ``busy``)."""
    g = ConnectionGate(100, **kw)  # type: ignore[arg-type]
    lst = _Listener()
    g.listener = lst  # type: ignore[assignment]
    opened = [0]
    g.open = lambda: opened[0]
    return g, lst, opened


def test_a_refusal_cuts_the_limit_to_beta_times_the_open_connections_once_per_window() -> None:
    g, lst, opened = _gate(floor=4, window_s=0.05)
    opened[0] = 40
    g.overloaded(now=1.0)
    assert g.limit == pytest.approx(40 * BETA)
    g.overloaded(now=1.01)  # same burst: no second cut
    assert g.limit == pytest.approx(40 * BETA)
    assert lst.calls.count("pause") == 2 and lst.paused  # 40 open >= 36: the kernel refuses new ones
    opened[0] = 30
    g.overloaded(now=1.2)
    assert g.limit == pytest.approx(30 * BETA)
    opened[0] = 3
    for _ in range(50):
        g.overloaded(now=g._last_cut + 1)
    assert g.limit == 4  # never below the floor


def test_served_responses_grow_the_limit_by_one_per_window_and_reopen_below_it() -> None:
    g, lst, opened = _gate(floor=2)
    opened[0] = 10
    g.overloaded(now=0.0)
    limit = g.limit
    g.served()  # still at the limit: stays closed
    assert g.limit == pytest.approx(limit + 1 / limit) and lst.paused
    opened[0] = 5
    g.served()
    assert not lst.paused and lst.calls[-1] == "resume"
    for _ in range(100_000):
        g.served()
    assert g.limit == 100  # up to the ceiling, never past it


def test_a_refused_requests_own_connection_no_longer_counts() -> None:
    g, lst, opened = _gate(floor=2)
    opened[0] = 3  # two held and the one refused, which closes
    g.overloaded(now=0.0, closing=1)
    assert g.limit == 2  # 2 * BETA, floored
    opened[0] = 2
    g.check()
    assert lst.paused  # the two held still fill it: the next connection is refused


def test_delay_pressure_cuts_the_limit_by_beta_without_any_refusal() -> None:
    pressed = [True]
    g, lst, opened = _gate(floor=2, window_s=0.0, pressure=lambda now: pressed[0])
    opened[0] = 20
    g.served(now=1.0)
    assert g.limit == pytest.approx(100 * BETA)  # from the limit, not from the 20 open
    for i in range(30):  # a standing queue: the limit comes down to the connections open and below
        g.served(now=1.1 + i)
    assert g.limit < 20 and lst.paused
    pressed[0] = False
    limit = g.limit
    g.served(now=40.0)
    assert g.limit == pytest.approx(limit + 1 / limit)


def test_one_queue_at_light_load_does_not_refuse_the_clients_not_yet_connected() -> None:
    """25 load-test users connecting on their first request, 4 so far, and one queue: the
    other 21 still connect (the cut used to go to 0.9 x 4 and close the listener)."""
    g, lst, opened = _gate(floor=2, window_s=0.02, pressure=lambda now: True, queued=lambda: True)
    opened[0] = 4
    for i in range(5):  # a 100 ms queue: five windows of pressure
        g.served(now=1.0 + 0.02 * i)
    opened[0] = 25
    g.check()
    assert g.limit > 25 and not lst.paused


def test_without_a_listener_the_gate_only_counts() -> None:
    g = ConnectionGate(10)
    g.overloaded(now=0.0)
    g.served()
    assert g.cuts == 1


def test_the_apps_pressure_counts_the_upload_and_its_queue_test_needs_more_than_a_batch() -> None:
    import time

    import numpy as np

    from optiserve.models.graph import InputSpec
    from optiserve.serve.app import create_app
    from optiserve.serve.endpoint import ServeConfig

    app = create_app(
        lambda feeds: [feeds["x"]],
        [InputSpec("x", "float32", ("batch", 2))],
        ["y"],
        ServeConfig("toy", max_batch=2, max_wait_ms=50.0),
        lambda b: {"x": np.zeros((b, 2), np.float32)},
    )
    assert app.min_connections == 2  # two per instance: the gate's floor
    t = time.perf_counter()
    tickets = [app.model.admission.admit(10)]  # admitted, its body still uploading: counts here
    assert not app.pressure(t + 0.04)  # younger than the bound
    assert app.pressure(t + 0.06)
    assert not app.queued()  # one request: a slow one, not a queue
    tickets += [app.model.admission.admit(10) for _ in range(2)]
    assert app.queued()  # three in flight, batches of two
    for ticket in tickets:
        ticket.release()
    assert not app.pressure(t + 0.07) and not app.queued()


def test_pressure_without_a_queue_is_one_slow_request_and_cuts_nothing() -> None:
    """A client pool opening connections at light load is not refused, however slow one request is."""
    queue = [False]
    g, lst, opened = _gate(floor=2, window_s=0.0, pressure=lambda now: True, queued=lambda: queue[0])
    opened[0] = 40
    g.served(now=10.0)  # an old request, no queue: grows, no cut
    assert g.limit == 100 and g.cuts == 0 and not lst.paused
    queue[0] = True
    g.served(now=10.1)  # a queue, the oldest past the bound
    assert g.limit == pytest.approx(100 * BETA) and g.cuts == 1


def test_pressure_soon_after_a_refusal_cuts_to_the_connections_open_as_the_refusal_did() -> None:
    g, lst, opened = _gate(floor=2, window_s=0.0, pressure=lambda now: True, queued=lambda: True)
    opened[0] = 40
    g.overloaded(now=5.0)
    opened[0] = 30  # refused connections closed; the limit (36) is above the 30 open
    g.served(now=5.5)  # the same overload: cut from the 30 open, the listener stays closed
    assert g.limit == pytest.approx(30 * BETA) and lst.paused
    g.served(now=7.0)  # long after the refusal: pressure alone, from the limit
    assert g.limit == pytest.approx(30 * BETA * BETA)


def test_with_no_queue_standing_the_limit_grows_by_one_per_response() -> None:
    """A transient's cut must not outlive it: once no more than a batch is in flight, each answered
    request gives a connection back (slow start), so refused clients reconnect within a few responses."""
    busy = [True]
    g, lst, opened = _gate(floor=2, window_s=0.0, pressure=lambda now: False, queued=lambda: busy[0])
    opened[0] = 92
    g.overloaded(now=1.0)  # a refusal during a host stall: cut to 0.9 x the 92 open
    assert g.limit == pytest.approx(92 * BETA) and lst.paused
    opened[0] = 80  # the refused users' connections closed
    g.served(now=1.01)  # a queue still stands (young): slow growth
    assert g.limit == pytest.approx(92 * BETA + 1 / (92 * BETA))
    busy[0] = False  # the queue drained
    for i in range(12):
        g.served(now=1.1 + i * 0.001)
    assert g.limit >= 92 and not lst.paused
