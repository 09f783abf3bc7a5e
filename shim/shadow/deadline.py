"""How long the shadow is given once the primary answered.

A call still waiting behind earlier calls on its keys has `ordering.max_wait` to be sent (the calls it waits
for have timeouts of their own), then the shadow has `timeout` from the send. A session's later message is
sent in its turn too: while it waits for it, the shadow having answered every message it was sent, the
shadow is not the one late, so the wait counts against `max_wait`; each such send gives the shadow
`timeout` again. A shadow that leaves a message unanswered still times out `timeout` after its send.

A read's stream its client ended (`shim.shadow.watch`) is cut as soon as the shadow has sent as many
answers as the primary had, within the same `timeout`.

Before, one `timeout` from the session's first send (or the primary's end) covered every later message's
wait in the lanes: a session the shadow replayed behind the primary, as on Envoy under load, was cut off
though the shadow answered each message at once, its later messages never sent (BK's book behind Bank's)
and their ids unpaired (`tests/services/venue/test_venue_session_wait.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shim.shadow.fate import Fate


class Deadline:
    __slots__ = ("_awaiting", "_cancel", "_fate", "_idle", "_max_wait", "_timeout", "_timer", "turn_waiting")

    def __init__(self, fate: Fate, timeout: float, max_wait: float, cancel: Callable[[], None]) -> None:
        self._fate, self._timeout, self._max_wait, self._cancel = fate, timeout, max_wait, cancel
        self._timer: asyncio.TimerHandle | None = None  # armed once the primary answered, until the call ends
        self._awaiting = False  # a session's next message waits for its turn in the lanes
        self._idle: Callable[[], bool] = lambda: False  # the shadow answered every message it was sent
        self.turn_waiting = False  # it waits so, the shadow idle: the wait counts against `max_wait`

    def primary_done(self, sent: bool) -> None:
        """The primary answered: `max_wait` while the call is not sent, or a session's next message waits for
        its turn with the shadow idle; else the shadow has `timeout` from now."""
        if not sent:
            self._arm(self._max_wait, self._wait_over)
        elif self.turn_waiting:
            self._arm(self._max_wait, self._waited_out)
        else:
            self._arm(self._timeout, self.expire)

    def sending(self, again: bool = False) -> None:
        """The call, or (`again`) a session's later message the shadow had answered all before, goes to the
        shadow now: once the primary answered, the shadow has `timeout` from now."""
        if self._timer is not None and (not again or self._idle()):
            self._arm(self._timeout, self.expire)

    async def turn(self, ready: Awaitable[bool], idle: Callable[[], bool]) -> bool:
        """A session's next message waits for its turn (`ready`); while the shadow has answered every message
        it was sent (`idle`), the wait counts against `max_wait`."""
        self._awaiting, self._idle = True, idle
        self.shadow_answered()
        try:
            return await ready
        finally:
            self._awaiting = self.turn_waiting = False

    def watch_ended(self, shadow_answers: int) -> None:
        """The client ended a read's stream after the primary's answers (`Watch.ended_after`,
        `shim.shadow.watch`): the shadow's call goes on until it sent as many (`shadow_answers` so far),
        within its time."""
        self.shadow_answered(shadow_answers)

    def shadow_answered(self, answers: int = 0) -> None:
        """The shadow sent its `answers`-th message: as many as the primary's stream its client ended, it is
        cut now; idle now, while a session's next message waits for its turn?"""
        watch = self._fate.watch
        watch.answers = max(watch.answers, answers)
        if watch.ended_after and watch.answers >= watch.ended_after and not watch.enough:
            watch.enough = True
            self.cancel()  # its time no longer runs: it answered as much
            self._cancel()
            return
        if self._awaiting and not self.turn_waiting and self._idle():
            self.turn_waiting = True
            if self._timer is not None:
                self._arm(self._max_wait, self._waited_out)

    def cancel(self) -> None:
        """The call is over."""
        if self._timer is not None:
            self._timer.cancel()

    def expire(self) -> None:
        """The shadow's time is up (or the call is given up): it ends now."""
        self._fate.expired = True
        self._fate.stop.set()
        self._cancel()

    def _arm(self, delay: float, then: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, then)

    def _wait_over(self) -> None:  # not sent within max_wait: the call gives up where it waits
        self._fate.waited_out = True
        self._fate.stop.set()

    def _waited_out(self) -> None:  # a session's later message waited max_wait for its turn
        self._fate.waited_out = True
        self._fate.stop.set()
        self._cancel()
