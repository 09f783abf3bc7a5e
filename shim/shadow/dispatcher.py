"""Starts a shim's mirrors within its bounds, and marks what it could not mirror.

Bounds: at most `max_in_flight` mirrored calls at once, of which streams (which may last) take at most
`max_in_flight_streams`: beyond that a call is not mirrored, and the exchange says so, unless a stream
idle for `stream_idle` gives up its place. A read is not mirrored either while the shim's event loop
runs more than `shed_lag` late and clients' calls wait on it (behind Envoy, only those routed through
Python do), nor anything while the shadow's breaker is open.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from comparators import Code, Outcome
from comparators.rules import RuleSet
from shim._breaker import Breaker
from shim._lanes import Lanes
from shim._noise import Noise
from shim._overload import LoopLag
from shim._translation import Translation
from shim.adapters import Channel
from shim.aliases import KeyAliases
from shim.ids import IdBook
from shim.intents import Intents
from shim.metrics import Counters
from shim.plan import Plans
from shim.routing import Router
from shim.shadow.capture import Budget
from shim.shadow.lateness import KeyLateness
from shim.shadow.mirror import Mirror
from shim.shadow.shared import Shared, Submit
from shim.steps import REFUSED, Steps, effect
from shim.store.key_order import KeyOrder
from shim.store_settings import correlation_id


class ShadowDispatcher:
    """Starts mirrors within bounds and counts what it could not mirror."""

    def __init__(
        self,
        channel: Channel,
        submit: Submit,
        counters: Counters,
        *,
        timeout: float,
        max_in_flight: int,
        max_capture: int,
        plans: Plans,
        primary_is_bank: bool = True,
        router: Router | None = None,
        breaker: Breaker | None = None,
        ids: IdBook | None = None,
        aliases: KeyAliases | None = None,
        steps: Steps | None = None,
        intents: Intents | None = None,
        correlation_header: str = "",
        noise: Noise | None = None,
        overload: LoopLag | None = None,
        shed_lag: float = 0.0,
        stream_hold: float = 0.5,
        max_wait: float = 30.0,
        max_in_flight_streams: int = 0,
        max_capture_total: int = 0,
        stream_idle: float = 30.0,
        key_order: KeyOrder | None = None,
        lateness: KeyLateness | None = None,
        rules: Callable[[], RuleSet] | None = None,
    ) -> None:
        self.shared = Shared(
            channel=channel,
            submit=submit,
            counters=counters,
            translation=Translation(router, ids, aliases, counters, primary_is_bank, plans),
            plans=plans,
            lanes=Lanes(),
            breaker=breaker if breaker is not None else Breaker(counters),
            budget=Budget(max_capture_total),
            timeout=timeout,
            max_capture=max_capture,
            stream_hold=stream_hold,
            max_wait=max_wait,
            stream_idle=stream_idle,
            primary_is_bank=primary_is_bank,
            router=router,
            steps=steps,
            intents=intents,
            noise=noise,
            key_order=key_order,
            lateness=lateness if lateness is not None else KeyLateness(),
            rules=rules,
        )
        self.overload = overload
        self.shed_lag = shed_lag
        # whether clients' calls wait on this event loop (behind Envoy, only those routed through Python):
        # a late loop sheds reads only then, else it delays only comparisons, which catch up
        self.clients_on_loop = True
        self.correlation_header = correlation_header
        self.max_in_flight = max_in_flight
        # streams (which may last) take at most this many of the places: calls of one message always find some
        self.max_streams = max_in_flight_streams or max(1, max_in_flight // 2)
        self._live: set[Mirror] = set()  # strong references: a running mirror is never collected
        self._streams = 0  # of the live mirrors, those of streaming calls
        self._leaving: set[Mirror] = set()  # given up for their places, finishing: counted no more
        self._idle = asyncio.Event()
        self._idle.set()

    def start(
        self,
        method: str,
        metadata: tuple[Any, ...],
        client_timeout: float | None,
        is_write: bool,
        copy: int = 0,
    ) -> tuple[Mirror | None, str]:
        """A mirror for a call (`copy`: its ordinal among the copies Envoy sent; 0: a call through the
        shim's own server), or none and why."""
        shared = self.shared
        stream = not shared.plans.of(method).kind.unary
        full = ""
        if len(self._live) >= self.max_in_flight:
            full = "not mirrored: shadow.max_in_flight calls already in flight"
        elif stream and self._streams >= self.max_streams:
            full = "not mirrored: shadow.max_in_flight_streams streams already in flight"
        if full and not self._make_room(streams_only=not len(self._live) >= self.max_in_flight):
            shared.counters.inc("shadow_dropped", method)
            return None, full
        if self.overload is not None and self.sheds and self.clients_on_loop:
            lag = self.overload.lag
            if lag > self.shed_lag and not is_write:  # a write missed would put its keys out of step
                shared.counters.inc("shadow_shed", method)
                late = f"{lag * 1000:.0f} ms"
                return None, f"not mirrored: the shim is overloaded (its event loop runs {late} late)"
        if not shared.breaker.allow():  # asked last: a call let through as the probe is mirrored
            shared.counters.inc("shadow_breaker_skipped", method)
            return None, "not mirrored: the shadow breaker is open after repeated shadow failures"
        mirror = Mirror(shared, method, metadata, client_timeout, is_write, self._release)
        mirror.correlation_id = self.correlation_id(metadata)
        mirror.probe = shared.breaker.probe
        mirror.stream = stream
        turns = shared.turns
        if turns is not None:
            mirror.admission.turn = turns.copy(copy) if copy else turns.call(method)
        self._live.add(mirror)
        self._streams += stream
        self._idle.clear()
        return mirror, ""

    @property
    def sheds(self) -> bool:
        """Whether reads are shed for overload now: `shed_lag` is not 0, and the start-up is over (the event
        loop has run on time for a while: `LoopLag.settled`)."""
        return self.overload is not None and self.shed_lag > 0 and self.overload.settled

    def _make_room(self, streams_only: bool) -> bool:
        """Give up the mirror idle longest (for `stream_idle` or more) so that a new call takes its place."""
        now = time.monotonic()
        idle_for = self.shared.stream_idle
        idle = [m for m in self._live if (m.stream or not streams_only) and now - m.last_active >= idle_for]
        if not idle:
            return False
        victim = min(idle, key=lambda m: m.last_active)
        self._live.discard(victim)
        self._streams -= victim.stream
        self._leaving.add(victim)
        self.shared.counters.inc("shadow_idle_given_up", victim.method)
        victim.give_up_idle()
        return True

    def correlation_id(self, metadata: tuple[Any, ...]) -> str:
        """The value of the client's request metadata that names the call ("" without)."""
        return correlation_id(self.correlation_header, metadata)

    @property
    def breaker(self) -> Breaker:
        return self.shared.breaker

    @property
    def in_flight(self) -> int:
        return len(self._live) + len(self._leaving)

    def mirrors(self) -> frozenset[Mirror]:
        """The mirrored calls in flight now, streams left out (a session may last for hours)."""
        return frozenset(m for m in (*self._live, *self._leaving) if not m.stream)

    def unsettled(self) -> list[Mirror]:
        """The mirrored calls in flight a switch would wait for (`Mirror.settled`)."""
        return [m for m in (*self._live, *self._leaving) if not m.settled]

    def waiting(self) -> Counter[str]:
        """What the mirrored calls in flight wait for, counted (`Mirror.waiting_for`)."""
        return Counter(m.waiting_for for m in (*self._live, *self._leaving))

    def give_up_all(self) -> int:
        """The shim stops: every mirrored call still running is given up (and recorded as such)."""
        for mirror in [*self._live, *self._leaving]:
            mirror.give_up()
        return self.in_flight

    def _release(self, mirror: Mirror) -> None:
        if mirror in self._live:
            self._live.discard(mirror)
            self._streams -= mirror.stream
        self._leaving.discard(mirror)
        if not self._live and not self._leaving:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until no mirrored call is in flight."""
        await self._idle.wait()

    def to_primary(self, method: str, payload: bytes) -> bytes:
        return self.shared.translation.to_primary(method, payload)

    def unmirrored(self, method: str, first: bytes | Unmirrored | None, primary: Outcome, why: str) -> None:
        """A write that was not mirrored: its keys (its first request's, and for a request stream, those its
        later messages named) are out of step unless the primary did nothing with it (a session that answered
        messages, then refused, may have applied them)."""
        steps, router, translation = self.shared.steps, self.shared.router, self.shared.translation
        more, answered = (first.keys, first.answers) if isinstance(first, Unmirrored) else ((), 0)
        first = first.first if isinstance(first, Unmirrored) else first
        self._minted_unpaired(method, first, primary)
        if steps is None or effect(primary, answered) == REFUSED:
            return
        keys: tuple[str, ...] = ()
        if router is not None:
            decoded = router.decode(method, first) if translation.needs_request(method) else None
            keys = translation.keys_for(method, decoded)
        said = "applied it" if primary.code == 0 else "may have applied it"
        if primary.code and answered:
            said += f" (it answered {answered} message{'s' if answered > 1 else ''} before {primary.status})"
        marked = tuple(dict.fromkeys((*keys, *more)))
        steps.mark(marked, method, f"{why}; the primary {said}", translation.client_side)

    def _minted_unpaired(self, method: str, first: bytes | None, primary: Outcome) -> None:
        """The ids a write that was not mirrored minted, kept as the primary's with no counterpart (with their
        owners): a later call naming one is then known not to reach the shadow as the client meant it (not
        sent, `unmapped-id`, on the owner's key), where it was sent naming an id the shadow never made."""
        translation, plan = self.shared.translation, self.shared.plans.of(method).ids
        if translation.ids is None or primary.code != 0 or not plan.mints or not primary.messages:
            return
        router = translation.router
        request = router.decode(method, first) if router is not None and first is not None else None
        found = translation.minted_in(
            method, plan, translation.decode_answers(plan, primary.messages), request
        )
        translation.ids.settle(translation.expect(method, found, request, 0))

    def unimplemented(self, method: str, primary: Outcome) -> bool:
        """A call of a method the descriptors do not describe that the primary refused as UNIMPLEMENTED:
        counted (`calls_unimplemented`), never recorded: it says nothing of the service."""
        if primary.code != Code.UNIMPLEMENTED or self.shared.plans.of(method).kind.described:
            return False
        self.shared.counters.inc("calls_unimplemented", method)
        return True

    def not_sampled(self, method: str, keys: tuple[str, ...], count: int = 1) -> int:
        """Of `count` reads with `keys` that were not mirrored (refused, shed, lost), how many sampling would
        have left out anyway, counted in `reads_not_sampled`: the decision a mirrored read gets (a hash of
        its keys with `sampling.by_key`, else a draw each). Such a read is no evidence missing, so it is
        never recorded `skipped`: its record would weigh 1 / `sampling.reads` times the unproven share."""
        router = self.shared.router
        left_out = 0 if router is None else sum(not router.sampled(keys) for _ in range(count))
        if left_out:
            self.shared.counters.inc("reads_not_sampled", method, left_out)
        return left_out

    def keys_of(self, method: str, first: bytes | None) -> tuple[str, ...]:
        """The routing keys of a call from its first request (for calls that are not mirrored)."""
        router, translation = self.shared.router, self.shared.translation
        if router is None or first is None or not translation.needs_request(method):
            return ()
        return translation.keys_for(method, router.decode(method, first))


def waiting(dispatchers: Iterable[ShadowDispatcher]) -> str:
    """What the mirrored calls in flight wait for, most common first ("" when none is in flight)."""
    counts: Counter[str] = Counter()
    for dispatcher in dispatchers:
        counts.update(dispatcher.waiting())
    return ", ".join(
        f"{n} mirrored call{'s' if n > 1 else ''} waiting for {what}" for what, n in counts.most_common()
    )


class Unmirrored:
    """What a call that is not mirrored leaves to judge: its first request, for a write's request stream the
    keys its later messages named (each gathered at the next turn of the loop, off the clients' path): Bank
    applied them all, BK none; and how many answer messages the primary sent (`answers`)."""

    __slots__ = ("_dispatcher", "_method", "answers", "first", "keys")

    def __init__(self, dispatcher: ShadowDispatcher | None, method: str, is_write: bool) -> None:
        self._dispatcher = dispatcher if is_write else None
        self._method = method
        self.first: bytes | None = None
        self.keys: dict[str, None] = {}  # of the messages after the first, in the order named
        self.answers = 0  # answer messages the primary sent (its outcome keeps none of them)

    def request(self, payload: bytes) -> None:
        if self.first is None:
            self.first = payload
        elif self._dispatcher is not None:
            asyncio.get_running_loop().call_soon(self._named, self._dispatcher, payload)

    def _named(self, dispatcher: ShadowDispatcher, payload: bytes) -> None:
        self.keys.update(dict.fromkeys(dispatcher.keys_of(self._method, payload)))
