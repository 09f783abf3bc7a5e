"""Turns in the lanes between the copies Envoy sends and the calls through the shim's own server.

On Envoy most calls reach the comparison plane as copies, on the processor's connection. The calls
that take Python on their primary path (`shim.dataplane.routes.python_reasons`) reach the shim's own
server instead, on another. A client's call through the shim's own server, made once an earlier call's
answer came back through Envoy, would then take its place in the lanes as it arrives, possibly before
that earlier call's copy has its place (a large request is still being received, the plane is behind):
mirrored in the other order, or naming an id whose pair it does not know is coming.

So such a call takes its place only once every copy received before it has its place; after a change
of routes (a switch), once every copy Envoy had sent when the new routes applied has its place too. The
copies received after it take their places after it: the order a client causes holds across the two
ways in. A copy has its place when its call entered the lanes (`Admission.admitted`), when nothing is
mirrored of it, or, for a stream of requests, as soon as its method is known: each of its messages
takes its own place as it comes. A call whose earlier copies do not all have their places within
`within` seconds (Envoy holds a copy that long for the plane) takes its place anyway, counted in
`calls_placed_before_earlier_copies`.

Copies keep their order among themselves the same way. A copy takes its place once its first request
message is whole, and a large one is still arriving (under flow control) when the copy of a small call
the client made once it had the large one's answer is whole: so a copy's steps also wait until every
copy received before it (Envoy sends them in the order it received the calls) has its place; a copy
whose steps wait has none, for the copies and calls after it, even once its stream is over. A copy
that keeps later ones waiting `within` seconds is passed over: they take their places, counted in
`calls_placed_before_earlier_copies`, and no later copy waits for it. Envoy drops a copy it holds that
long after its call, so a copy passed over is a call still under way (its client still sending), whose
order against the calls made meanwhile is not the client's to give, or one about to be lost (which
marks a write's keys). One that takes its place after all is told (`Waiting.overtaken`): a write then
marks its keys out of step, since a later call on them may have reached the shadow first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from shim.dataplane.arrivals import TICK, Arrivals
from shim.metrics import Counters

Step = Callable[..., object]


class Waiting(Protocol):
    """A copy being received (`processor._Copy`)."""

    @property
    def ordinal(self) -> int: ...

    @property
    def method(self) -> str: ...

    @property
    def placed(self) -> bool:
        """Whether it has its place, as far as its stream tells (its steps may still wait here)."""

    def overtaken(self) -> None:
        """It takes its place after later copies that passed it over."""


class CallTurn:
    """A call through the shim's own server: its steps in the lanes wait for the copies received before it."""

    __slots__ = ("_steps", "after", "cleared", "method", "received")

    def __init__(self, method: str, received: int, after: int | None) -> None:
        self.method = method
        self.received = received  # copies received as it arrived
        self.after = after  # the copies it follows (None: routes are changing, known once they apply)
        self.cleared = False
        self._steps: list[tuple[Step, tuple[Any, ...]]] = []

    def enter(self, step: Step, *args: Any) -> None:
        if self.cleared:
            asyncio.get_running_loop().call_soon(step, *args)
        else:
            self._steps.append((step, args))

    def clear(self) -> None:
        """Its turn came: its steps run, in their order (before the copies held behind it)."""
        self.cleared = True
        loop = asyncio.get_running_loop()
        for step, args in self._steps:
            loop.call_soon(step, *args)
        self._steps.clear()


class CopyTurn:
    """A copy: its steps in the lanes wait for the copies received before it, and for the calls through the
    shim's own server that came before it."""

    __slots__ = ("_turns", "ahead", "held", "method", "ordinal", "since")

    def __init__(self, turns: Turns, ordinal: int, method: str) -> None:
        self._turns = turns
        self.ordinal = ordinal
        self.method = method
        self.ahead = False  # every copy received before it has its place, or was passed over
        self.held = 0  # its steps held now
        self.since = 0.0  # when its first step began to wait for the copies before it (loop time)

    def enter(self, step: Step, *args: Any) -> None:
        self._turns.copy_step(self, step, args)


class Turns:
    """The turns of one comparison plane's copies and the calls through its shim's own server."""

    def __init__(
        self,
        received: Callable[[], int],
        placed: Callable[[], int],
        counters: Counters,
        within: float = 2.0,
        copies: Callable[[], Mapping[int, Waiting]] = dict,
    ) -> None:
        self._received = received  # copies received so far (the last one's ordinal)
        self._placed_by_plane = placed
        self._placed = Arrivals(self._placed_prefix)  # how many of the first copies have their places
        self._copies = copies  # the copies being received, by ordinal
        self._counters = counters
        self.within = within
        self._calls: deque[CallTurn] = deque()  # not cleared yet, in the order they came
        # copies' steps, behind the first call or behind the copies received before them, as they came
        self._held: list[tuple[CopyTurn, Step, tuple[Any, ...]]] = []
        self._queued: dict[int, CopyTurn] = {}  # copies whose steps wait for copies received before them
        self._ahead: set[int] = set()  # copies with no place yet whose steps go (nothing earlier holds them)
        self._passed: dict[
            int, Waiting
        ] = {}  # copies that kept later ones waiting `within`: they wait no more
        self._ticker: asyncio.Task[None] | None = None  # looks for copies placed while copies' steps wait
        self._floor = 0  # every call follows the copies Envoy had sent when the last routes applied
        self._changing = False  # routes are being changed: the floor is not known yet
        self._changed = asyncio.Event()
        self._changed.set()
        self._worker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Calls through the shim's own server waiting for their turn."""
        return len(self._calls)

    def call(self, method: str) -> CallTurn:
        """The turn of a call through the shim's own server arriving now."""
        received = self._received()
        if self._changing:
            turn = CallTurn(method, received, None)
        else:
            turn = CallTurn(method, received, max(received, self._floor))
            if not self._calls and self._placed.reached(max(received, self._floor)):
                turn.cleared = True  # the copies before it all have their places: nothing to wait for
                return turn
        self._calls.append(turn)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._turns(), name="calls' turns")
        return turn

    def copy(self, ordinal: int) -> CopyTurn:
        copy = self._copies().get(ordinal)
        return CopyTurn(self, ordinal, copy.method if copy is not None else "")

    def _placed_prefix(self) -> int:
        """How many of the first copies have their places: a copy whose steps wait for earlier copies has
        none yet, whatever its stream says (it may be over already)."""
        placed = self._placed_by_plane()
        return min(placed, min(self._queued, default=placed + 1) - 1)

    def copy_step(self, turn: CopyTurn, step: Step, args: tuple[Any, ...]) -> None:
        loop = asyncio.get_running_loop()
        if not turn.ahead and not turn.held and not self._before(turn.ordinal, self._waiting()):
            self._goes(turn)  # (the usual case: every copy before it has its place)
        if turn.ahead and not turn.held and not self._holds(turn.ordinal):
            self._run(turn, step, args)
            return
        if not turn.ahead and not turn.held:
            turn.since = loop.time()
            self._queued[turn.ordinal] = turn
            if self._ticker is None or self._ticker.done():
                self._ticker = loop.create_task(self._tick(), name="copies' turns")
        turn.held += 1
        self._held.append((turn, step, args))

    def _waiting(self) -> dict[int, Waiting]:
        """The copies received that have no place yet and whose steps do not go yet, by ordinal."""
        waiting = {o: copy for o, copy in self._copies().items() if not copy.placed}
        for gone in [o for o in self._passed if o not in waiting]:  # placed after all, or lost
            del self._passed[gone]
        self._ahead.intersection_update(waiting)
        return {o: copy for o, copy in waiting.items() if o not in self._ahead}

    def _before(self, ordinal: int, waiting: dict[int, Waiting]) -> bool:
        """Whether a copy received before this one holds it: one with no place yet (still arriving, or its
        steps waiting), not passed over."""
        return any(o < ordinal and o not in self._passed for o in (*waiting, *self._queued))

    def _goes(self, turn: CopyTurn) -> None:
        """Nothing received before the copy holds it any more: its steps go (once no call holds them). Its
        place, taken by its first step, counts as taken for the copies after it from now on (call_soon keeps
        order). One that takes its place before a copy passed over is counted."""
        turn.ahead = True
        self._queued.pop(turn.ordinal, None)
        self._ahead.add(turn.ordinal)
        if any(o < turn.ordinal for o in self._passed):
            self._counters.inc("calls_placed_before_earlier_copies", turn.method)

    def _run(self, turn: CopyTurn, step: Step, args: tuple[Any, ...]) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(step, *args)
        if (passed := self._passed.pop(turn.ordinal, None)) is not None:  # it takes its place after all
            loop.call_soon(passed.overtaken)

    async def _tick(self) -> None:
        """While copies' steps wait for earlier copies, look for their places (and the bound) each tick."""
        while self._queued:
            await asyncio.sleep(TICK)
            self._release()

    def _holds(self, ordinal: int) -> bool:
        """Whether a copy's steps wait: the first call waiting came before it was received."""
        if not self._calls:
            return False
        after = self._calls[0].after
        return after is None or after < ordinal

    def _release(self) -> None:
        """The copies' steps nothing holds any more run: copy by copy in the order they were received, each
        copy's in the order they came. The copies still arriving that kept one waiting `within` are passed
        over first (not those whose steps wait too: they go in their order)."""
        if not self._held:
            return
        waiting = self._waiting()
        now = asyncio.get_running_loop().time()
        if any(now - turn.since >= self.within for turn in self._queued.values()):
            last = max(o for o, turn in self._queued.items() if now - turn.since >= self.within)
            self._passed.update(
                (o, copy) for o, copy in waiting.items() if o < last and o not in self._queued
            )
        held, self._held = sorted(self._held, key=lambda h: h[0].ordinal), []
        for turn, step, args in held:
            if not turn.ahead and not self._before(turn.ordinal, waiting):
                self._goes(turn)
                waiting.pop(turn.ordinal, None)
            if not turn.ahead or self._holds(turn.ordinal):
                self._held.append((turn, step, args))
            else:
                turn.held -= 1
                self._run(turn, step, args)

    def changing_routes(self) -> None:
        """New routes are being applied: calls arriving now follow every copy Envoy sends until then."""
        self._changing = True
        self._changed.clear()

    def routes_changed(self, sent: int | None) -> None:
        """The new routes apply; Envoy had sent `sent` copies by then (None: not known, the copies received
        so far stand for them)."""
        floor = sent if sent is not None else self._received()
        self._floor = max(self._floor, floor)
        for turn in self._calls:
            if turn.after is None:
                turn.after = max(turn.received, self._floor)
        self._changing = False
        self._changed.set()

    async def _turns(self) -> None:
        calls = self._calls
        while calls:
            first = calls[0]
            if first.after is None:
                await self._changed.wait()
                continue
            self._release()
            if not await self._placed.through(first.after, self.within):
                self._counters.inc("calls_placed_before_earlier_copies", first.method)
            self._release()  # the copies before it whose steps waited go first
            calls.popleft()
            first.clear()
            self._release()

    def close(self) -> None:
        """The plane stops: every step waiting runs now."""
        for task in (self._worker, self._ticker):
            if task is not None:
                task.cancel()
        self._placed.close()
        while self._calls:
            self._calls.popleft().clear()
        held, self._held = sorted(self._held, key=lambda h: h[0].ordinal), []
        self._queued.clear()
        loop = asyncio.get_running_loop()
        for turn, step, args in held:
            turn.ahead, turn.held = True, 0
            loop.call_soon(step, *args)
