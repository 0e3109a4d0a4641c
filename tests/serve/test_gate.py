"""The overload gate's AIMD limit, without a server: cuts once per window, grows by 1/limit, floors."""

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
    assert lst.calls == ["pause", "pause"] and lst.paused  # 40 open >= 36: the kernel refuses new ones
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
    lst.paused = True
    g.served()  # still at the limit: stays closed
    assert g.limit == pytest.approx(limit + 1 / limit) and lst.paused
    opened[0] = 5
    g.served()
    assert not lst.paused and lst.calls[-1] == "resume"
    for _ in range(100_000):
        g.served()
    assert g.limit == 100  # up to the ceiling, never past it


def test_delay_pressure_cuts_without_any_refusal() -> None:
    pressed = [True]
    g, _, opened = _gate(floor=2, window_s=0.0, pressure=lambda now: pressed[0])
    opened[0] = 20
    g.served(now=1.0)
    assert g.limit == pytest.approx(20 * BETA)
    pressed[0] = False
    g.served(now=2.0)
    assert g.limit == pytest.approx(20 * BETA + 1 / (20 * BETA))


def test_without_a_listener_the_gate_only_counts() -> None:
    g = ConnectionGate(10)
    g.overloaded(now=0.0)
    g.served()
    assert g.cuts == 1


def test_the_apps_pressure_is_a_standing_queue_of_requests_in_flight_not_one_burst() -> None:
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
    assert app.min_connections == 2  # a full batch per instance: the gate's floor
    assert app.busy() == 0
    t = time.perf_counter()
    ticket = app.model.admission.admit(10)  # admitted, its body still uploading: counts here
    assert app.busy() == 1
    assert not app.pressure(t + 0.04)  # younger than the bound
    assert not app.pressure(t + 0.06)  # past it once
    assert app.pressure(t + 0.12)  # past it for the bound's length
    ticket.release()
    assert not app.pressure(t + 0.13)


def test_idle_connections_never_close_the_listener_only_requests_in_flight_do() -> None:
    """A client pool opening connections at light load is not refused, however low the limit was cut."""
    in_flight = [1]
    g, lst, opened = _gate(floor=2, busy=lambda: in_flight[0])
    opened[0] = 50
    g.overloaded(now=0.0)  # cut to the floor: 1 in flight * BETA
    assert g.limit == 2
    opened[0] = 40
    g.check()  # 40 connections open, 1 request in flight: stays open
    assert not lst.paused
    in_flight[0] = 2
    g.check()
    assert lst.paused  # 2 in flight and 40 open: at the limit
    in_flight[0] = 1
    g.check()
    assert not lst.paused
    opened[0] = 100
    g.check()  # the ceiling counts connections, idle or not
    assert lst.paused
