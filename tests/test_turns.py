"""Lanes: one holder at a time per tenant, tenants side by side, nothing kept once a lane is let go."""

from __future__ import annotations

import threading

from genret.turns import Lane, Lanes


def _hold_in_thread(lanes: Lanes, tenant: str, inside: threading.Event, leave: threading.Event) -> threading.Thread:
    def run() -> None:
        with lanes.hold(tenant):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_tenants_lane_takes_one_holder_at_a_time_and_other_tenants_go_on_beside_it() -> None:
    lanes = Lanes(Lane)
    a_in, a_leave, a2_in, a2_leave, b_in, b_leave = (threading.Event() for _ in range(6))
    first = _hold_in_thread(lanes, "a", a_in, a_leave)
    assert a_in.wait(5)
    second = _hold_in_thread(lanes, "a", a2_in, a2_leave)
    other = _hold_in_thread(lanes, "b", b_in, b_leave)
    assert b_in.wait(5), "another tenant's lane waited for a's"
    assert not a2_in.wait(0.3), "a's second holder got in while its first held the lane"
    assert len(lanes) == 2  # a (held, one waiting) and b
    b_leave.set()
    other.join(5)
    assert len(lanes) == 1
    a_leave.set()
    assert a2_in.wait(5), "a's second holder did not get in after its first left"
    a2_leave.set()
    first.join(5)
    second.join(5)
    assert len(lanes) == 0  # nothing is kept about a tenant whose lane nobody holds or waits for


def test_a_lane_is_let_go_when_its_holder_raises() -> None:
    lanes = Lanes(Lane)
    try:
        with lanes.hold("a"):
            raise RuntimeError("the work failed")
    except RuntimeError:
        pass
    assert len(lanes) == 0
    done = threading.Event()
    _hold_in_thread(lanes, "a", done, threading.Event()).join(0)
    assert done.wait(5), "the lane stayed locked after its holder raised"
