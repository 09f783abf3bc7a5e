"""Modes at run time: which side answers each method, and switching without a write on one side only.

A scope is "*" (the default mode) or a method ("/pkg.Svc/Method"). The config
gives the default; the admin API (`shim mode set`) changes any scope, and the
store keeps the changes, so that a restarted shim keeps them and every replica
sharing the store converges on them (each re-reads them every `store.refresh`).

A switch is atomic for the calls: new calls wait, the calls in flight finish on
both sides (the primary's answer and the mirrored call alike), and only then
does the new mode apply and the waiting calls go on. So no write straddles two
modes, and the order of the writes on each key is kept across the switch. A
switch waits for every call in flight, whatever its method: it is rare, and
brief when the sides answer; when they do not within its pause, the switch is
given up and the mode stays. Streams under way are the exception: a session, a
batch the primary has not answered, or a server stream the shadow has begun to
answer finishes on the side it started on (`InFlight.settled`), and a batch
across a switch puts its keys out of step (`Mirror.spanned_switch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import structlog

from shim.errors import ShimError
from shim.store.records import ModeChange

DEFAULT = "*"
BK_ANSWERS = frozenset({"bk-primary", "bk"})  # the modes in which BK answers the clients
STARTED_BY = "shim serve (the config's mode)"  # who a mode a shim started in by its config is recorded as


def started_in(default: str, stored: Mapping[str, str], history: Sequence[ModeChange]) -> ModeChange | None:
    """The change to record when a shim starts in its config's `default` mode, no mode being set at run time
    for the default scope (`stored`): from the default scope's last recorded mode (`history`, newest
    first; "" when none), when it differs. Unrecorded, a restart in `bank` mode was a stretch the gate never
    saw, and a promotion from it was judged as one from `shadow`."""
    if DEFAULT in stored:
        return None
    last = next((change.to_mode for change in history if change.scope == DEFAULT), "")
    if last == default or (not last and default == "shadow"):  # (a first start in shadow changes nothing)
        return None
    return ModeChange(time.time(), STARTED_BY, DEFAULT, last, default, "the mode the shim started in", False)


def bk_answers(table: Mapping[str, str]) -> bool:
    """Whether BK answers the clients of any scope in `table`."""
    return any(mode in BK_ANSWERS for mode in table.values())


# seconds a switch's last step may take once the calls it held are free to go on: the data plane routes as
# decided (`SwitchHooks.apply`, milliseconds when it answers). Past it the calls go on regardless, so a switch
# holds them for its pause and this at most, whatever happens to it (a data plane that does not answer,
# a cancelled admin call)
APPLY_WITHIN = 3.0
# a switch catching up with the mirrored calls under way looks every this often (`Modes.catch_up`); and it
# waits for them this long at most (and no longer than grace_period), then holds the calls all the same
CATCH_UP_POLL = 0.01
CATCH_UP_WITHIN = 30.0
_log = structlog.get_logger("shim.modes")


# why a switch was refused when no call was left to wait for once its pause ran out: the data plane's
# steps (its routes, the copies on their way) took the pause, as on a machine too busy for so short a one
NOTHING_LEFT = (
    "no call was left by then: the switch's own steps outlasted the pause, as on a machine too busy for it"
)


class SwitchTimeout(ShimError):
    """Calls in flight did not finish in time, or the data plane did not apply the routes that bring them
    through the shim (`routes`): the mode did not change. `waiting`: what they waited for."""

    def __init__(self, message: str, waiting: str = "", routes: bool = False) -> None:
        super().__init__(message)
        self.waiting = waiting
        self.routes = routes


class Settles(Protocol):
    """A call's mirror, as a switch sees it (`shim.shadow.mirror.Mirror`)."""

    task: asyncio.Task[None]  # the mirrored call: a switch waits for it, unless it is settled

    @property
    def settled(self) -> bool: ...

    @property
    def stream_under_way(self) -> bool: ...

    def spanned_switch(self) -> None: ...


class InFlight:
    """A call in the shim's server (`Modes.enter`), until it is over on both sides."""

    __slots__ = ("decided", "method", "mirror", "stream")

    def __init__(self, method: str, stream: bool) -> None:
        self.method = method
        self.stream = stream  # a described streaming method
        self.decided = False  # its route and mirror are chosen (`mirror`: None when it has none)
        self.mirror: Settles | None = None

    @property
    def settled(self) -> bool:
        """Whether a switch may go on without waiting for it: a stream under way finishes on the side it
        started on, as its mirror (if it has one) allows (`Mirror.settled`)."""
        return self.stream and self.decided and (self.mirror is None or self.mirror.settled)


class SwitchHooks(Protocol):
    """What a data plane in front of the shim does in a switch (`shim.dataplane`)."""

    async def prepare(self, table: Mapping[str, str], changes: Mapping[str, str]) -> None:
        """While new calls to the shim wait: the calls of the scopes that change come through the shim (in
        the modes of `table`), and the calls that went elsewhere before are settled."""

    async def apply(self, table: Mapping[str, str]) -> None:
        """While the calls pause: route as `table` says (the new modes, or the old after a failure)."""

    def waiting(self) -> str:
        """What `prepare` waits for now ("": nothing of the plane's own), said when a switch gives up."""

    def routing(self) -> bool:
        """Whether `prepare` waits now for the data plane to apply the routes it wrote (then no call is
        what a switch that gives up waited for)."""


class Modes:
    def __init__(self, default: str) -> None:
        self.hooks: SwitchHooks | None = None
        # what the calls in flight wait for, said when a switch gives up waiting ("": not known)
        self.explain: Callable[[], str] = str
        # the mirrored calls in flight a switch would wait for, on either data plane (`catch_up`)
        self.unsettled: Callable[[], Sequence[Settles]] = list
        # on Envoy: until every copy it has sent so far is in the shim (`catch_up`)
        self.copies_in: Callable[[], Awaitable[None]] | None = None
        self._modes: dict[str, str] = {DEFAULT: default}
        # BK answered the clients of some scope at some time (in this process, or before it as the store
        # says): they may hold BK's ids, in every scope and after a rollback too. Set before the routes of
        # the switch that makes BK answer are applied; never cleared
        self.bk_answered = bk_answers(self._modes)
        self._calls: set[InFlight] = set()  # in the shim's server
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()  # cleared while a switch waits for the calls in flight
        self._open.set()
        self._switching = asyncio.Lock()
        self.catching_up = False  # a switch waits for the mirrored calls under way, holding none (`catch_up`)
        self.pauses: deque[float] = deque(maxlen=100)  # seconds new calls waited, per switch applied or not
        self.switches: Counter[str] = Counter()  # switches that held calls here: "applied", "refused"
        self.since = time.time()  # when the modes last changed here

    @property
    def default(self) -> str:
        return self._modes[DEFAULT]

    def of(self, method: str) -> str:
        """The mode of `method` now."""
        return self._modes.get(method) or self._modes[DEFAULT]

    def table(self) -> dict[str, str]:
        """Every scope's mode ("*": the default)."""
        return dict(self._modes)

    def restore(self, stored: Mapping[str, str]) -> None:
        """The modes the store keeps, at start (no call is in flight yet)."""
        self._modes.update(stored)
        self.bk_answered = self.bk_answered or bk_answers(self._modes)

    # -- calls -------------------------------------------------------------------------------

    async def enter(self, method: str = "", stream: bool = False) -> InFlight:
        """A call starts (waiting while a switch is under way)."""
        if not self._open.is_set():
            await self._open.wait()
        call = InFlight(method, stream)
        self._calls.add(call)
        self._idle.clear()
        return call

    def leave(self, call: InFlight) -> None:
        """A call is over on both sides."""
        self._calls.discard(call)
        if not self._calls:
            self._idle.set()

    async def _settled(self) -> None:
        """Until every call in the shim's server is over, or a stream under way (`InFlight.settled`)."""
        while not self._idle.is_set():
            if all(call.settled for call in self._calls):
                return
            await asyncio.sleep(0.002)  # only while a switch holds calls, for at most its pause

    def _spanned(self, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        """The batches and sessions under way whose method's mode changed with a switch that applies
        (`Mirror.spanned_switch`)."""
        for call in self._calls:
            mirror = call.mirror
            if mirror is not None and mirror.stream_under_way:
                method = call.method
                if (old.get(method) or old[DEFAULT]) != (new.get(method) or new[DEFAULT]):
                    mirror.spanned_switch()

    # -- switching ---------------------------------------------------------------------------

    async def catch_up(self, within: float) -> None:
        """Before a switch holds any call: until the mirrored calls under way now are settled (on Envoy,
        with the copies it has sent so far), not those that come meanwhile, for `within` s at most. A shim
        behind its clients (a slow shadow, a busy comparison plane) catches up with no call held, and the
        switch then holds the calls only for what came since."""
        try:
            async with asyncio.timeout(within):
                if self.copies_in is not None:
                    await self.copies_in()
                pending = [mirror for mirror in self.unsettled() if not mirror.settled]
                if pending:
                    _log.info("switch: catching up with the mirrored calls under way", calls=len(pending))
                self.catching_up = True  # from here, a call that comes is not waited for
                while not all(mirror.settled for mirror in pending):  # noqa: ASYNC110  (states, no event)
                    await asyncio.sleep(CATCH_UP_POLL)  # no call waits on it: a look every 10 ms
        except TimeoutError:
            _log.warning(
                "switch: the mirrored calls under way did not finish within the time to catch up; the switch"
                " holds the calls all the same, for its pause at most",
                seconds=within,
            )
        finally:
            self.catching_up = False

    @property
    def paused(self) -> bool:
        """New calls wait now: a switch is under way."""
        return not self._open.is_set()

    async def switch(self, modes: Mapping[str, str], within: float) -> None:
        """Apply `modes` (scope: mode) once the calls in flight are over; SwitchTimeout when they are
        not within `within` seconds (nothing changes then)."""
        if all(self._modes.get(scope) == mode for scope, mode in modes.items()):
            return
        async with self.holding(modes, within) as hold:
            hold.commit()

    @contextlib.asynccontextmanager
    async def holding(self, modes: Mapping[str, str], within: float) -> AsyncIterator[Hold]:
        """New calls wait and the calls in flight finish (SwitchTimeout when they do not within `within`
        seconds: nothing changes then); the caller then decides: `hold.commit()` applies `modes` as the
        block ends, else the modes stay. Either way the waiting calls go on as it ends."""
        async with self._switching:
            hooks = self.hooks
            old = self.table()
            hold = Hold()
            # new calls wait from here: those the data plane sends to the shim meanwhile too, so that
            # none is mirrored ahead of an earlier call's copy still on its way
            self._open.clear()
            paused = time.perf_counter()
            applied = False
            try:
                try:
                    async with asyncio.timeout(within):
                        if hooks is not None:
                            await hooks.prepare(old, modes)
                        await self._settled()
                except TimeoutError as exc:
                    held = sum(1 for call in self._calls if not call.settled)
                    calls = "1 call" if held == 1 else f"{held} calls"
                    here = f"{calls} in the shim's server" if held else ""
                    why = "; ".join(w for w in (here, hooks.waiting() if hooks else "", self.explain()) if w)
                    if hooks is not None and hooks.routing():
                        raise SwitchTimeout(
                            f"the data plane did not apply the shim's routes within {within:g}s ({why}); "
                            "the mode did not change",
                            why,
                            routes=True,
                        ) from exc
                    raise SwitchTimeout(
                        f"the calls in flight did not finish within {within:g}s ({why or NOTHING_LEFT}); "
                        "the mode did not change",
                        why or NOTHING_LEFT,
                    ) from exc
                yield hold
                if hold.committed:
                    if bk_answers(modes):  # the routes applied now already treat clients' ids as BK's too
                        self.bk_answered = True
                    if hooks is not None:
                        async with asyncio.timeout(APPLY_WITHIN):
                            await hooks.apply({**old, **modes})
                    self._spanned(old, {**old, **modes})
                    self._modes.update(modes)
                    self.since = time.time()
                    applied = True
                elif hooks is not None:
                    await self._restore(hooks, old)
            except BaseException:
                if hooks is not None:
                    await self._restore(hooks, old)
                raise
            finally:
                self.pauses.append(time.perf_counter() - paused)  # a switch refused paused calls too
                self.switches["applied" if applied else "refused"] += 1
                self._open.set()

    @staticmethod
    async def _restore(hooks: SwitchHooks, old: Mapping[str, str]) -> None:
        """The data plane routes as before the switch, within APPLY_WITHIN: an error there is logged, and the
        held calls go on all the same (with what raised the first error, if any)."""
        try:
            async with asyncio.timeout(APPLY_WITHIN):
                await hooks.apply(old)
        except Exception as exc:
            _log.error(
                "switch given up: the data plane's routes before it were not confirmed",
                error=str(exc) or type(exc).__name__,
            )


class Hold:
    """A switch under way (`Modes.holding`): new calls wait until its block ends."""

    def __init__(self) -> None:
        self.committed = False

    def commit(self) -> None:
        """Apply the switch's modes as the block ends."""
        self.committed = True
