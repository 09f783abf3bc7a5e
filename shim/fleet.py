"""Replicas sharing a store switch modes as one: two phases, and each replica's view published.

Every replica publishes its view (the modes it applies, since when) whenever it changes, is heard
from by its heartbeat (`shim.liveness`, every `store.refresh`), and takes part in every switch:

1. the replica asked for a switch (`Fleet.switch`) records it as pending, with a deadline
   (`grace_period` from now), and announces it (NOTIFY on PostgreSQL; the others also poll);
2. each replica, on seeing it, holds new calls, lets its calls in flight finish on both sides
   (`Modes.holding`, as a local switch does) and answers: held, or could not;
3. once every live replica has held (one silent past `store.lease` by its heartbeat, on the
   database's clock, is not waited for), the proposer commits: the modes and their audit are
   written in the same transaction as the decision; a replica that could not hold, or the
   deadline passing, abandons it (nothing recorded);
4. every replica, on seeing the decision, applies the modes (or keeps its own) and lets its held
   calls go on. A replica still holding well past the deadline abandons the switch itself: the
   decision is one conditional update, so the switch is either committed or abandoned everywhere.
   A replica that answered held never lets its calls go on without the decision: a store failing
   then is tried again, the calls still held, up to the deadline and a lease more (`_held`).

So, among live replicas, no call is answered in the old mode once any replica answers in the new:
they all hold between the two. A replica starting joins before it serves (`Fleet.start`): it listens,
publishes its view, then takes part in a switch pending and reads the modes after it; the proposer
waits for the replicas live once its switch is recorded pending, so a replica starting during a switch
is either waited for or finds it pending (or decided) before its first call. Modes changed in the
store otherwise (a replica that was silent while a switch committed) are followed at the next look at
the store (every `store.refresh`), as a local switch (`follow`).

Over 400 lines: the proposer's, every replica's and a starting replica's parts in a switch, and the
bounds that keep a replica's hold within the switch's pause whatever fails (the data plane, a cancelled
admin call; the store, within the switch's deadline), read and write the same state (the switches seen,
the answers and decisions heard, the parts under way); split, that state would be shared across modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from shim._timeouts import bounded
from shim.errors import ShimError
from shim.liveness import lease_of
from shim.modes import CATCH_UP_WITHIN, DEFAULT, Modes, SwitchTimeout
from shim.store import ModeChange, ReplicaView, Store, StoreError, Switch
from shim.store.fleet import ABANDONED, COMMITTED

_log = structlog.get_logger("shim.fleet")
STOP_WITHIN = 1.0  # seconds a stopping replica gives the store to forget its view
HINT = (
    "; try again, or allow the clients' calls to wait longer for this switch (shim mode set --pause, at most"
    " grace_period) or for every switch (switch_pause)"
)
RETRY = 0.05  # seconds between tries of a store that failed while this replica holds its calls for a switch
PENDING_POLL = 0.02  # seconds between looks for a pending switch, without notifications (see `_look`)


class Unswitched(ShimError):
    """A fleet switch that did not apply: nothing changed, nothing was recorded."""


class Unapplied(ShimError):
    """A fleet switch committed (recorded, and applied by the replicas that could), which this replica's data
    plane did not apply: it applies the store's modes at its next look at the store."""


@dataclass(frozen=True, slots=True)
class Timing:
    refresh: float  # seconds between looks at the store (and heartbeats, `shim.liveness`)
    lease: float  # a replica not heard from for this long is not waited for
    grace: float  # a switch is decided within this long, else abandoned
    pause: float  # a replica holds its calls for a switch at most this long, else abandons it


class Fleet:
    """This replica's part in the fleet's switches (see the module docstring)."""

    def __init__(self, replica: str, modes: Modes, store: Store, lock: asyncio.Lock, timing: Timing) -> None:
        """`store`: on PostgreSQL best a connection of the fleet's own, so that a switch's few statements
        never wait behind the comparisons' writes (`Books.fleet_store`)."""
        self.replica = replica
        self._modes = modes
        self._store = store
        self._lock = lock  # a switch or a re-read of the store's modes, one at a time
        self.timing = Timing(
            timing.refresh,
            lease_of(timing.refresh, timing.lease),
            timing.grace,
            min(timing.pause, timing.grace),
        )
        self._woken = asyncio.Condition()
        self.listening = False
        self._seen: set[str] = set()  # switches this replica has taken part in
        self._tasks: set[asyncio.Task[None]] = set()
        self._parts: dict[str, asyncio.Task[None]] = {}  # switch -> this replica's part in it, under way
        self._answers: dict[str, dict[str, bool]] = {}  # heard: switch -> replica -> held
        self._decided: dict[str, str] = {}  # heard: switch -> committed or abandoned
        # switch -> why this replica did not hold: what its calls waited for, and what it did not do
        self._waited: dict[str, tuple[str, str]] = {}
        # switch -> why this replica's data plane did not apply it once the fleet had committed it
        self._unapplied: dict[str, str] = {}
        self._published: tuple[dict[str, str], float] | None = None  # the view last published: modes, since
        self._learned: dict[str, str] = {}  # switch proposed here -> its decision, as read while holding

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the fleet, before this replica serves: listen to the switches' announcements, publish its
        view, then take part in a switch pending (hold, then apply its decision) and read the store's
        modes after it. So a replica starting during a switch serves in the modes the switch decided: a
        switch proposed before its view was published is found pending here, or decided (its modes in the
        store); one proposed later waits for it (`switch` reads the views after its proposal)."""
        listening = asyncio.Event()
        self._spawn(self._listen(listening), "fleet notifications")
        with contextlib.suppress(TimeoutError):  # a connection slow to come: switches are polled for
            async with asyncio.timeout(self.timing.refresh):
                await listening.wait()
        await self._publish()
        await self._join()
        self._spawn(self._look(), "fleet: a look at the store")

    async def _join(self) -> None:
        """At start: take part in the switch pending, if any, until it is decided; then follow the store."""
        try:
            pending = await self._store.fleet.pending()
        except StoreError as exc:
            _log.warning("fleet state not read", error=str(exc))
            pending = None
        if pending is not None:
            self._take_part_once(pending)
            part = self._parts.get(pending.id)
            if part is not None:  # held here (no call is taken yet) until the decision, then applied
                await asyncio.shield(part)
            elif pending.id not in self._seen:  # past its deadline: decided, or abandoned, within a lease
                self._seen.add(pending.id)
                with contextlib.suppress(StoreError):
                    await self._decision(pending, time.monotonic() + self.timing.lease + self.timing.refresh)
        await self.follow()

    async def stop(self) -> None:
        """Take part in no switch any more, and forget this replica's view (`forget`)."""
        await self.leave()
        await self.forget()

    async def leave(self) -> None:
        """Take part in no switch any more (the view stays in the store until `forget`)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def forget(self) -> None:
        """Remove this replica's view from the store, STOP_WITHIN at most: a store that does not answer does
        not hold the stop up (a stopping shim runs it beside the drain; before, the drain waited for it)."""
        with contextlib.suppress(StoreError, TimeoutError):
            async with asyncio.timeout(STOP_WITHIN):
                await self._store.fleet.forget(self.replica)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _look(self) -> None:
        """A switch announced is taken part in as it is heard (`_heard`): this is the fallback. Without
        notifications (SQLite; PostgreSQL's lost) and with other replicas live, a pending switch is looked
        for every PENDING_POLL too, so that each replica holds within switch_pause of the first."""
        others = False  # other replicas were live at the last look
        looked = time.monotonic()
        while True:
            fast = others and not self.listening
            await asyncio.sleep(min(self.timing.refresh, PENDING_POLL) if fast else self.timing.refresh)
            if fast and time.monotonic() - looked < self.timing.refresh:
                with contextlib.suppress(StoreError):
                    pending = await self._store.fleet.pending()
                    if pending is not None:
                        self._take_part_once(pending)
                continue
            looked = time.monotonic()
            await self.tick()
            with contextlib.suppress(StoreError):
                now = time.time()
                views = await self._store.fleet.views()
                others = any(v.replica != self.replica and self._live(v, now) for v in views)

    async def _listen(self, ready: asyncio.Event) -> None:
        """Hear the switches' announcements; `ready` is set once listening (or once it failed: polling)."""
        while True:
            try:
                async for message in self._store.fleet.notifications():
                    self.listening = True
                    ready.set()
                    self._heard(message)
                    await self._wake()
            except StoreError as exc:
                _log.warning("store notifications lost; polling meanwhile", error=str(exc))
            self.listening = False
            ready.set()
            if self._store.conninfo is None:
                return  # SQLite: polling only
            await asyncio.sleep(self.timing.refresh)

    def _heard(self, message: str) -> None:
        """What a notification says (see `shim.store.fleet`): a switch to take part in at once, an
        answer, a decision."""
        what, _, rest = message.partition(" ")
        with contextlib.suppress(ValueError):
            if what == "pending":
                switch, deadline, modes = rest.split(" ", 2)
                pause = 0.0
                if not modes.startswith("{"):  # its pause before its modes (earlier builds sent none)
                    paused, modes = modes.split(" ", 1)
                    pause = float(paused)
                proposal = Switch(switch, 0.0, "", json.loads(modes), [], float(deadline), pause=pause)
                self._take_part_once(proposal)
            elif what == "answered":
                switch, replica, held = rest.split(" ")
                self._answers.setdefault(switch, {})[replica] = held == "1"
            elif what == "decided":
                switch, state = rest.split(" ")
                self._decided[switch] = state

    def _take_part_once(self, proposal: Switch) -> None:
        if proposal.id not in self._seen and time.time() < proposal.deadline:
            self._seen.add(proposal.id)
            part = self._parts[proposal.id] = self._spawn(
                self._take_part(proposal), f"fleet switch {proposal.id}"
            )
            part.add_done_callback(lambda _: self._parts.pop(proposal.id, None))

    async def _wake(self) -> None:
        async with self._woken:
            self._woken.notify_all()

    async def _wait(self, seconds: float) -> None:
        """Until a notification comes, or `seconds` pass."""
        with contextlib.suppress(TimeoutError):
            async with self._woken:
                await bounded(self._woken.wait(), seconds)

    async def _publish(self) -> None:
        self._published = None
        view = ReplicaView(self.replica, self._modes.table(), self._modes.since, time.time())
        await self._store.fleet.publish(view)
        self._published = (view.modes, view.since)

    async def tick(self) -> None:
        """Take part in a switch pending; publish the view if it changed since (or failed); else follow
        the store's modes."""
        try:
            pending = await self._store.fleet.pending()
            if pending is not None:
                self._take_part_once(pending)
            if self._published != (self._modes.table(), self._modes.since):
                await self._publish()
        except StoreError as exc:
            _log.warning("fleet state not read", error=str(exc))
            return
        if pending is None:
            await self.follow()

    # -- a switch through this replica ---------------------------------------------------------

    async def switch(
        self,
        changes: Sequence[ModeChange],
        pause: float = 0.0,
        check: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        """Apply `changes` on every live replica, and record them, as one step; Unswitched says why not.
        `pause`: how long each replica may hold its calls for it (0: each one's switch_pause). `check`: once
        every replica holds (its calls in flight over), why the switch must not be committed ("": it may)."""
        # no call is held while the mirrored calls under way here finish: the pause is for what came since
        await self._modes.catch_up(min(self.timing.grace, CATCH_UP_WITHIN))
        now = time.time()
        proposal = Switch(
            secrets.token_hex(8), now, self.replica, {c.scope: c.to_mode for c in changes}, list(changes),
            now + self.timing.grace, pause=pause,
        )  # fmt: skip
        self._seen.add(proposal.id)  # taken part in below, not when its announcement comes back
        try:
            other = await self._store.fleet.propose(proposal)
        except StoreError as exc:
            raise Unswitched(f"the store did not take the switch: {exc}") from exc
        if other:
            raise Unswitched(f"another switch ({other}) is under way: try again once it is decided")
        until = time.monotonic() + self._pause(proposal)  # each replica holds its calls this long at most
        part = self._spawn(self._take_part(proposal), f"fleet switch {proposal.id}")
        try:
            try:
                # the replicas waited for: those live once the switch is recorded pending. One whose view
                # comes later finds it pending as it starts (`start`), and holds for it before it serves
                views = await self._store.fleet.views()
                live = {v.replica for v in views if self._live(v, time.time())}
                why = await self._collect(proposal, live | {self.replica}, until)
                if not why and check is not None:
                    why = await check()
                state = await self._store.fleet.decide(proposal, not why, time.time())
            except StoreError as exc:
                why, state = f"the store failed: {exc}", ""
            finally:
                await self._wake()
            await asyncio.shield(part)
            learned = self._learned.pop(proposal.id, "")
            state = state or learned  # a decide whose answer was lost: the decision read since
        except asyncio.CancelledError:
            # the admin call was cancelled (Ctrl-C, its deadline): the switch is given up at once, unless
            # committed already, rather than left pending (and refusing every other) until its deadline;
            # the replicas holding their calls for it let them go on as they hear of it
            self._spawn(self._abandon(proposal), f"fleet switch {proposal.id} given up")
            raise
        unapplied = self._unapplied.pop(proposal.id, "")
        if state == COMMITTED and unapplied:
            raise Unapplied(
                f"recorded: the fleet committed the switch, but it is not applied on this replica yet"
                f" ({self.replica}: {unapplied}); the replica applies the store's modes at its next look at"
                f" the store (every {self.timing.refresh:g}s): `shim mode show` says when"
            )
        waited, failed = self._waited.pop(proposal.id, ("", ""))
        if waited and state != COMMITTED:  # this replica could not hold: what its own calls waited for
            why = f"{failed} here, on {self.replica} ({waited}){HINT}"
        if state != COMMITTED:
            raise Unswitched(
                why
                or f"a replica held its calls for {self._pause(proposal):g}s (the switch's pause) with no"
                f" decision{HINT}"
            )

    async def _abandon(self, proposal: Switch) -> None:
        with contextlib.suppress(StoreError, TimeoutError):
            async with asyncio.timeout(STOP_WITHIN):
                await self._store.fleet.decide(proposal, False, time.time())
        await self._wake()

    def _pause(self, proposal: Switch) -> float:
        """How long this replica holds its calls for `proposal` at most: the switch's own pause (`shim mode
        set --pause`), else switch_pause; never past the grace period."""
        return min(proposal.pause or self.timing.pause, self.timing.grace)

    def _live(self, view: ReplicaView, now: float) -> bool:
        return now - view.heartbeat <= self.timing.lease

    async def _collect(self, proposal: Switch, live: set[str], until: float) -> str:
        """Wait until every live replica holds: "" then, else why the switch must be abandoned (one could
        not hold, or not all held by `until`, monotonic, or by the deadline)."""
        views: dict[str, ReplicaView] = {}
        read = 0.0  # when the views were read (monotonic); heard answers come in between
        while True:
            if not self.listening or time.monotonic() - read >= self.timing.refresh:
                views, read = {v.replica: v for v in await self._store.fleet.views()}, time.monotonic()
            now = time.time()
            answers = {
                r: v.answered == proposal.id for r, v in views.items() if v.answered.endswith(proposal.id)
            }
            answers.update(self._answers.get(proposal.id, {}))
            refused = sorted(r for r in live if answers.get(r) is False)
            if refused:
                return (
                    f"calls in flight did not finish within the switch's pause ({self._pause(proposal):g}s)"
                    f" on {', '.join(refused)} (its log says which){HINT}"
                )
            waiting = sorted(
                r for r in live if r in views and r not in answers and self._live(views[r], now)
            )  # a replica gone (stopped) or silent past its lease is not waited for
            if not waiting:
                return ""
            if time.monotonic() >= until:
                return (
                    f"not held within the switch's pause ({self._pause(proposal):g}s) by"
                    f" {', '.join(waiting)}: calls in flight did not finish in time (its log says which), or"
                    f" it did not hear of it{HINT}"
                )
            if now >= proposal.deadline:
                return f"no answer within {self.timing.grace:g}s from {', '.join(waiting)}"
            await self._wait(min(self._poll(), max(until - time.monotonic(), 0.001)))

    def _poll(self) -> float:
        """How often to read the store while calls are held: notifications come at once; polling is
        the fallback."""
        return min(self.timing.refresh, 0.25) if self.listening else min(self.timing.refresh, 0.02)

    # -- every replica's part ------------------------------------------------------------------

    async def _take_part(self, proposal: Switch) -> None:
        try:
            await self._hold(proposal)
        finally:
            self._answers.pop(proposal.id, None)
            self._decided.pop(proposal.id, None)

    async def _hold(self, proposal: Switch) -> None:
        committed = False  # the fleet's decision, as read here
        async with self._lock:
            try:
                # new calls wait from here: for `pause` at most, the calls in flight and the decision alike
                until = time.monotonic() + self._pause(proposal)
                within = min(proposal.deadline - time.time(), self._pause(proposal))
                async with self._modes.holding(proposal.modes, within) as hold:
                    decision = await self._held(proposal, until)
                    if proposal.replica == self.replica:  # its proposer's own decide may have failed
                        self._learned[proposal.id] = decision
                    if decision == COMMITTED:
                        committed = True
                        hold.commit()
            except SwitchTimeout as exc:
                _log.warning(
                    "fleet switch: calls in flight did not finish", switch=proposal.id, error=str(exc)
                )
                if proposal.replica == self.replica:  # its proposer says it in its refusal
                    pause = f"within the switch's pause ({self._pause(proposal):g}s)"
                    failed = (
                        f"Envoy did not apply the shim's routes {pause}"
                        if exc.routes
                        else f"calls in flight did not finish {pause}"
                    )
                    self._waited[proposal.id] = (exc.waiting, failed)
                with contextlib.suppress(StoreError):
                    await self._store.fleet.answer(self.replica, proposal.id, held=False)
                return
            except StoreError as exc:  # the modes stay; what the store holds is followed at its next look
                _log.error(
                    "fleet switch: the decision could not be read while calls were held; they go on in the"
                    " modes they had (a switch the fleet committed is followed at the next look at the"
                    " store)",
                    switch=proposal.id, error=str(exc),
                )  # fmt: skip
                return
            except (ShimError, OSError) as exc:  # the data plane did not apply the routes: the modes stay
                _log.error(
                    "fleet switch: the data plane did not apply it; the modes stay (a switch the fleet"
                    " committed is followed at the next look at the store)",
                    switch=proposal.id, error=str(exc) or type(exc).__name__,
                )  # fmt: skip
                if proposal.replica == self.replica:
                    self._waited[proposal.id] = (
                        str(exc) or type(exc).__name__,
                        "the data plane did not apply the switch",
                    )
                    if committed:  # recorded already: its proposer must not say it applied here
                        self._unapplied[proposal.id] = str(exc) or type(exc).__name__
                with contextlib.suppress(StoreError, TimeoutError):
                    async with asyncio.timeout(STOP_WITHIN):
                        await self._store.fleet.answer(self.replica, proposal.id, held=False)
                return
        try:
            await self._publish()
        except StoreError as exc:
            _log.warning("view not published", error=str(exc))
        if hold.committed:  # how long new calls waited here: the longest pause a call saw
            _log.warning(
                "modes switched with the fleet", switch=proposal.id, modes=proposal.modes,
                by=proposal.replica, paused_ms=round(self._modes.pauses[-1] * 1000, 1),
            )  # fmt: skip

    async def _held(self, proposal: Switch, until: float) -> str:
        """Answer that this replica holds its calls, then the decision (`_decision`). From the answer on (one
        whose reply was lost too) the proposer may commit on it, so a store that fails or is slow is tried
        again (a new connection), the calls still held, until the decision is read, or made (abandoned:
        this replica's pause is over): not later than the deadline and a lease more, when every replica gives
        up a switch not decided (StoreError then: the calls go on in the modes they had)."""
        last = max(proposal.deadline - time.time(), until - time.monotonic(), 0.0) + self.timing.lease
        answered = False
        failed = ""  # the last failure, said once the bound is passed
        try:
            async with asyncio.timeout(last):
                while True:
                    try:
                        if not answered:
                            await self._store.fleet.answer(self.replica, proposal.id, held=True)
                            answered = True
                        return await self._decision(proposal, until)
                    except StoreError as exc:
                        if not failed:
                            _log.warning(
                                "fleet switch: the store failed after this replica held its calls; they stay"
                                " held until the decision is read",
                                switch=proposal.id, error=str(exc),
                            )  # fmt: skip
                        failed = str(exc)
                        await self._wait(min(self.timing.refresh, RETRY))
        except TimeoutError:
            raise StoreError(
                f"no decision read within the switch's deadline and the lease ({self.timing.lease:g}s) more"
                + (f": {failed}" if failed else "")
            ) from None

    async def _decision(self, proposal: Switch, until: float) -> str:
        """The switch's outcome, once decided. Not decided by `until` (monotonic: this replica's calls were
        held for `pause`), or past the deadline (and a lease more, for the proposer to decide first), this
        replica abandons it itself, unless it was committed first: the decision is one conditional update."""
        read = 0.0  # when the state was last read (monotonic): a decision heard comes at once
        while True:
            state = self._decided.get(proposal.id)
            if state is None and (not self.listening or time.monotonic() - read >= self.timing.refresh):
                state, read = await self._store.fleet.state(proposal.id), time.monotonic()
            if state in (COMMITTED, ABANDONED):
                return state
            if time.monotonic() >= until and state != "":
                _log.warning(
                    "fleet switch given up: not decided while this replica held its calls for its pause",
                    switch=proposal.id, pause=self._pause(proposal),
                )  # fmt: skip
                return await self._store.fleet.decide(proposal, False, time.time()) or ABANDONED
            if state == "" or time.time() > proposal.deadline + self.timing.lease:
                return await self._store.fleet.decide(proposal, False, time.time()) or ABANDONED
            await self._wait(min(self._poll(), max(until - time.monotonic(), 0.0)))

    async def views(self) -> list[tuple[ReplicaView, bool, bool]]:
        """Each replica's view, whether its modes differ from the store's, and whether it is silent (not
        heard from within the lease)."""
        stored = await self._store.modes.current()
        now = time.time()
        return [
            (
                view,
                any(
                    (view.modes.get(scope) or view.modes.get(DEFAULT)) != mode
                    for scope, mode in stored.items()
                ),
                not self._live(view, now),
            )
            for view in await self._store.fleet.views()
        ]

    async def apart(self, table: Mapping[str, str]) -> list[str]:
        """The live replicas whose modes differ from `table` (this replica's): each with the scopes it
        differs on, in its own modes (a replica started in another mode by its config, say)."""
        now, found = time.time(), []
        for view in await self._store.fleet.views():
            if not self._live(view, now):
                continue
            differ = [
                f"{scope.lstrip('/')} {_mode_of(view.modes, scope)}"
                for scope in sorted(set(view.modes) | set(table))
                if _mode_of(view.modes, scope) != _mode_of(table, scope)
            ]
            if differ:
                found.append(f"{view.replica} in {', '.join(differ)}")
        return found

    # -- modes changed in the store otherwise ----------------------------------------------------

    async def follow(self) -> dict[str, str]:
        """Apply the modes the store holds and this replica does not (a switch committed while it was
        silent): the changes."""
        if self._lock.locked():
            return {}  # a switch is under way here
        async with self._lock:
            try:
                stored = await self._store.modes.current()
            except StoreError as exc:
                _log.warning("modes not re-read", error=str(exc))
                return {}
            table = self._modes.table()
            changed = {scope: mode for scope, mode in stored.items() if table.get(scope) != mode}
            if not changed:
                return {}
            try:
                await self._modes.switch(changed, within=self.timing.grace)
            except (ShimError, OSError) as exc:  # calls in flight, or the data plane: tried again next look
                _log.warning(
                    "mode switch from the store not applied yet", error=str(exc) or type(exc).__name__
                )
                return {}
            _log.warning("modes changed by another replica applied", modes=changed)
        with contextlib.suppress(StoreError):
            await self._publish()
        return changed


def _mode_of(table: Mapping[str, str], scope: str) -> str:
    return table.get(scope) or table.get(DEFAULT, "")
