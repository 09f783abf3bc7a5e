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
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from shim.dataplane.arrivals import Arrivals
from shim.metrics import Counters

Step = Callable[..., object]


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
    """A copy: its steps in the lanes wait for the calls through the shim's own server that came before it."""

    __slots__ = ("_turns", "ordinal")

    def __init__(self, turns: Turns, ordinal: int) -> None:
        self._turns = turns
        self.ordinal = ordinal

    def enter(self, step: Step, *args: Any) -> None:
        self._turns.copy_step(self.ordinal, step, args)


class Turns:
    """The turns of one comparison plane's copies and the calls through its shim's own server."""

    def __init__(
        self, received: Callable[[], int], placed: Callable[[], int], counters: Counters, within: float = 2.0
    ) -> None:
        self._received = received  # copies received so far (the last one's ordinal)
        self._placed = Arrivals(placed)  # how many of the first copies have their places
        self._counters = counters
        self.within = within
        self._calls: deque[CallTurn] = deque()  # not cleared yet, in the order they came
        self._held: list[tuple[int, Step, tuple[Any, ...]]] = []  # copies' steps, behind the first call
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
        return CopyTurn(self, ordinal)

    def copy_step(self, ordinal: int, step: Step, args: tuple[Any, ...]) -> None:
        if self._holds(ordinal):
            self._held.append((ordinal, step, args))
        else:
            asyncio.get_running_loop().call_soon(step, *args)

    def _holds(self, ordinal: int) -> bool:
        """Whether a copy's steps wait: the first call waiting came before it was received."""
        if not self._calls:
            return False
        after = self._calls[0].after
        return after is None or after < ordinal

    def _release(self) -> None:
        """The copies' steps no call holds any more run, in the order they came."""
        held, self._held = self._held, []
        loop = asyncio.get_running_loop()
        for ordinal, step, args in held:
            if self._holds(ordinal):
                self._held.append((ordinal, step, args))
            else:
                loop.call_soon(step, *args)

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
            calls.popleft()
            first.clear()
            self._release()

    def close(self) -> None:
        """The plane stops: every step waiting runs now."""
        if self._worker is not None:
            self._worker.cancel()
        self._placed.close()
        while self._calls:
            self._calls.popleft().clear()
        self._release()
