"""The turns of the calls through the shim's own server among the copies (`shim.dataplane.turns`): a call
takes its place after the copies received before it, the copies received after it after it, and a call
made while the routes change after every copy Envoy had sent when they applied. A copy takes its place
after the copies received before it; one still arriving after `within` is passed over. End to end on
Envoy: `tests/services/custody/test_custody_python_path_order.py`,
`tests/dataplane/test_envoy_order.py`."""

from __future__ import annotations

import asyncio
import time

from shim.dataplane.turns import Turns
from shim.metrics import Counters


class Copy:
    """A copy being received (`turns.Waiting`)."""

    def __init__(self, ordinal: int, method: str = "/s.S/Copy") -> None:
        self.ordinal = ordinal
        self.method = method
        self.placed = False
        self.told = 0  # times it was told copies received after it took their places first

    def overtaken(self) -> None:
        self.told += 1


class Copies:
    """The processor's two counts: copies received, and how many of the first have their places (those after
    are still arriving)."""

    def __init__(self) -> None:
        self.received = 0
        self.placed = 0

    def arriving(self) -> dict[int, Copy]:
        return {o: Copy(o) for o in range(self.placed + 1, self.received + 1)}


def _turns(copies: Copies, within: float = 10.0) -> tuple[Turns, Counters]:
    counters = Counters()
    return Turns(lambda: copies.received, lambda: copies.placed, counters, within, copies.arriving), counters


class Arriving:
    """Copies being received, each placed when its first step runs."""

    def __init__(self, count: int) -> None:
        self.open = {o: Copy(o) for o in range(1, count + 1)}
        self.received = count
        self.ran: list[int] = []

    def placed(self) -> int:
        return min((o for o, copy in self.open.items() if not copy.placed), default=self.received + 1) - 1

    def step(self, ordinal: int) -> None:
        """A copy's first step: it takes its place."""
        self.ran.append(ordinal)
        self.open[ordinal].placed = True

    def turns(self, within: float = 10.0) -> tuple[Turns, Counters]:
        counters = Counters()
        return Turns(lambda: self.received, self.placed, counters, within, lambda: self.open), counters


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


async def test_a_copy_takes_its_place_after_the_copies_received_before_it() -> None:
    """A large write's copy is still arriving when the copy of a small write made once it was answered is
    whole: the small one waits, and copies held take their places in the order they were received."""
    copies = Arriving(3)
    turns, counters = copies.turns()
    third, second, first = turns.copy(3), turns.copy(2), turns.copy(1)
    third.enter(copies.step, 3)
    second.enter(copies.step, 2)
    await _turn_of_the_loop()
    assert copies.ran == []  # copy 1 is still arriving
    first.enter(copies.step, 1)
    await _until(lambda: len(copies.ran) == 3)
    assert copies.ran == [1, 2, 3]
    second.enter(copies.ran.append, 20)  # a later step of a copy that has its place: at once
    await _turn_of_the_loop()
    assert copies.ran[-1] == 20
    assert counters.get("calls_placed_before_earlier_copies", "/s.S/Copy") == 0
    turns.close()


async def test_copies_whose_earlier_copies_all_have_their_places_go_at_once_in_their_order() -> None:
    copies = Arriving(3)
    turns, _ = copies.turns()
    for ordinal in (1, 2, 3):  # each whole before the next: no wait, one turn of the loop for all
        turns.copy(ordinal).enter(copies.step, ordinal)
    await _turn_of_the_loop()
    assert copies.ran == [1, 2, 3]
    turns.close()


async def test_a_copy_still_arriving_after_within_is_passed_over_counted_and_told_if_it_comes() -> None:
    copies = Arriving(4)
    turns, counters = copies.turns(within=0.05)
    late = copies.open[1]
    turns.copy(3).enter(copies.step, 3)  # whole, waiting for 1 and 2
    turns.copy(2).enter(copies.step, 2)  # whole, waiting for 1: it is not passed over
    await _until(lambda: copies.ran == [2, 3])
    assert counters.get("calls_placed_before_earlier_copies", "/s.S/Copy") == 2
    assert late.told == 0
    turns.copy(4).enter(copies.step, 4)  # received after copy 1 was passed over: no wait for it
    await _turn_of_the_loop()
    assert copies.ran == [2, 3, 4]
    assert counters.get("calls_placed_before_earlier_copies", "/s.S/Copy") == 3
    turns.copy(1).enter(copies.step, 1)  # it takes its place after all, after those that passed it
    await _turn_of_the_loop()
    assert copies.ran == [2, 3, 4, 1]
    assert late.told == 1
    turns.close()


async def test_a_copy_passed_over_and_lost_is_forgotten() -> None:
    copies = Arriving(2)
    turns, _ = copies.turns(within=0.05)
    lost = copies.open[1]
    second = turns.copy(2)
    second.enter(copies.step, 2)
    await _until(lambda: copies.ran == [2])
    del copies.open[1]  # lost: its stream is over
    turns.copy(1).enter(copies.ran.append, 10)  # its last steps (no place taken)
    await _turn_of_the_loop()
    assert copies.ran == [2, 10]
    assert lost.told == 0
    turns.close()


async def test_a_copy_waits_for_earlier_copies_and_for_the_call_before_it() -> None:
    copies = Arriving(1)
    turns, _ = copies.turns()
    call = turns.call("/s.S/Call")  # after copy 1, which is still arriving
    call.enter(copies.ran.append, 0)
    copies.received = 2
    copies.open[2] = Copy(2)
    turns.copy(2).enter(copies.step, 2)
    await _turn_of_the_loop()
    assert copies.ran == []
    turns.copy(1).enter(copies.step, 1)
    await _until(lambda: len(copies.ran) == 3)
    assert copies.ran == [1, 0, 2]
    turns.close()


async def test_a_copy_whose_steps_wait_holds_the_copies_and_calls_after_it_though_its_stream_is_over() -> (
    None
):
    copies = Arriving(3)
    turns, _ = copies.turns()
    second = turns.copy(2)
    second.enter(copies.ran.append, 2)  # waits for copy 1
    del copies.open[2]  # its answer came: its stream is over
    turns.copy(3).enter(copies.step, 3)
    turns.call("/s.S/Call").enter(copies.ran.append, 0)
    await _turn_of_the_loop()
    assert copies.ran == []
    turns.copy(1).enter(copies.step, 1)
    await _until(lambda: len(copies.ran) == 4)
    assert copies.ran == [1, 2, 3, 0]
    turns.close()
