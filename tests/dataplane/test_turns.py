"""The turns of the calls through the shim's own server among the copies (`shim.dataplane.turns`): a call
takes its place after the copies received before it, the copies received after it after it, and a call
made while the routes change after every copy Envoy had sent when they applied. End to end on Envoy:
`tests/services/custody/test_custody_python_path_order.py`."""

from __future__ import annotations

import asyncio
import time

from shim.dataplane.turns import Turns
from shim.metrics import Counters


class Copies:
    """The processor's two counts: copies received, and how many of the first have their places."""

    def __init__(self) -> None:
        self.received = 0
        self.placed = 0


def _turns(copies: Copies, within: float = 10.0) -> tuple[Turns, Counters]:
    counters = Counters()
    return Turns(lambda: copies.received, lambda: copies.placed, counters, within), counters


async def _until(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.001)


async def _turn_of_the_loop() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_call_waits_for_the_copies_received_before_it_and_the_later_copies_wait_for_it() -> None:
    copies = Copies()
    turns, _ = _turns(copies)
    ran: list[str] = []
    copies.received, copies.placed = 2, 1  # the second copy is still arriving
    call = turns.call("/s.S/Call")
    call.enter(ran.append, "call")
    copies.received = 3
    turns.copy(3).enter(ran.append, "copy 3")  # received after the call
    turns.copy(2).enter(ran.append, "copy 2")  # received before it: never held by it
    await _turn_of_the_loop()
    assert ran == ["copy 2"]
    assert turns.waiting == 1
    copies.placed = 2
    await _until(lambda: len(ran) == 3)
    assert ran == ["copy 2", "call", "copy 3"]
    call.enter(ran.append, "call's next step")  # its turn came: at once now
    await _turn_of_the_loop()
    assert ran[-1] == "call's next step"
    turns.close()


async def test_a_call_with_every_earlier_copy_placed_takes_its_place_at_once() -> None:
    copies = Copies()
    turns, _ = _turns(copies)
    copies.received = copies.placed = 5
    ran: list[str] = []
    turns.call("/s.S/Call").enter(ran.append, "call")
    assert turns.waiting == 0
    await _turn_of_the_loop()
    assert ran == ["call"]
    turns.close()


async def test_calls_take_their_turns_in_the_order_they_came() -> None:
    copies = Copies()
    turns, _ = _turns(copies)
    ran: list[str] = []
    copies.received = 1
    first = turns.call("/s.S/First")
    copies.received = 2
    second = turns.call("/s.S/Second")
    second.enter(ran.append, "second")
    first.enter(ran.append, "first")
    copies.placed = 2
    await _until(lambda: len(ran) == 2)
    assert ran == ["first", "second"]
    turns.close()


async def test_a_call_made_while_the_routes_change_follows_every_copy_sent_before_they_applied() -> None:
    copies = Copies()
    turns, _ = _turns(copies)
    ran: list[str] = []
    copies.received = copies.placed = 4
    turns.changing_routes()
    call = turns.call("/s.S/Call")  # the copies received so far are all placed, but more were sent
    call.enter(ran.append, "call")
    turns.copy(5).enter(ran.append, "copy 5")  # held: the call's place is not known yet
    await _turn_of_the_loop()
    assert ran == []
    turns.routes_changed(sent=6)  # Envoy had sent 6 when the routes applied: 5 and 6 come first
    copies.received = 6
    await _turn_of_the_loop()
    assert ran == ["copy 5"]
    turns.copy(6).enter(ran.append, "copy 6")
    copies.placed = 6
    await _until(lambda: len(ran) == 3)
    assert ran == ["copy 5", "copy 6", "call"]
    turns.close()


async def test_a_call_whose_earlier_copies_do_not_come_in_time_goes_ahead_and_is_counted() -> None:
    copies = Copies()
    turns, counters = _turns(copies, within=0.05)
    ran: list[str] = []
    copies.received = 1
    turns.call("/s.S/Call").enter(ran.append, "call")
    await _until(lambda: ran == ["call"])
    assert counters.get("calls_placed_before_earlier_copies", "/s.S/Call") == 1
    turns.close()


async def test_when_the_plane_stops_every_step_waiting_runs() -> None:
    copies = Copies()
    turns, _ = _turns(copies)
    ran: list[str] = []
    copies.received = 1
    turns.call("/s.S/Call").enter(ran.append, "call")
    copies.received = 2
    turns.copy(2).enter(ran.append, "copy 2")
    turns.close()
    await _turn_of_the_loop()
    assert ran == ["call", "copy 2"]
