"""The id map: which Bank id is which BK id, learned from the two answers.

When both sides answer a minting call (a write, or any call for kinds that
`learn_from = "all"`), the ids found at the same place of both answers make
pairs (`comparators.ids.pair_up`). The first pair learned for an id wins (in
memory, and in the store when memory may not hold it: `checked`); a later,
conflicting one is counted and ignored, except for ids of one query
(`scope = "query"`, page tokens): one minted again once the book changed pairs
anew, and the latest pair wins. Pairs are kept in memory (the
`store.id_cache` most recent ones) and in the store, so that a restarted shim,
or another replica sharing a PostgreSQL store, knows them too.

A minting call whose primary has answered but whose shadow has not yet is
*pending*: its ids are known on the primary's side only. A call naming one of
them learns the owner key at once (so it is ordered with the minting call) and
waits, bounded by its own shadow timeout, for the counterpart.

The map works both ways: `counterpart(side, ...)` translates from Bank's id
space to BK's ("bank") or back ("bk").

A minting call that ends without the other side's id leaves its ids *unpaired*
(kept in memory and in the store): a later call naming one of them cannot be
translated and is not sent. An id the map has never seen at all (not paired,
not pending, not unpaired) is *unknown*: `minted()` says which. A call naming an
unknown id waits for the answers of earlier calls that may mint it, while they are
not in (`answering`): on Envoy a copy of an answer can come after the next request
made of it.

Over 400 lines: one map's memory, its pending and unpaired ids, learning and looking up pairs, all on
the same few dicts; split apart they would pass those dicts around.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from comparators.ids import OWNERS, Found, IdFields
from shim.metrics import Counters
from shim.store import IdPair, Sealer, Store, StoreError, Unpaired

_log = structlog.get_logger("shim.ids")


def other(side: str) -> str:
    return "bk" if side == "bank" else "bank"


@dataclass(slots=True)
class Pending:
    """An id one side minted whose counterpart is not known yet."""

    owner: str
    future: asyncio.Future[str | None]
    key: tuple[str, str, str] = ("", "", "")  # (side, kind, scoped id)
    # the lowest order in the lanes (`shim._lanes.Ticket.order`) of the calls that minted it; 0: not known
    order: int = 0


class IdBook:
    def __init__(
        self,
        fields: IdFields,
        store: Store | None,
        counters: Counters,
        cache: int = 1_000_000,
        shared: bool = False,
        sealer: Sealer | None = None,
    ):
        """`shared`: other processes learn pairs into the same store (a fleet's replicas, workers). `sealer`:
        the kinds whose fields are redacted, their ids stored sealed and logged as their hashes."""
        self.fields = fields
        self._store = store
        self._sealer = sealer
        if store is not None:
            store.pairs.seal_with(sealer)
        self._counters = counters
        self._cache = max(cache, 1)
        self._shared = shared
        # memory holds every pair of the store (a conflict shows in memory alone): until a pair is evicted,
        # when the store had no more than the memory holds at start, and no other process learns into it
        self._whole = store is None
        self._unchecked: list[tuple[str, str, str]] = []  # new pairs to check against the store's
        # (side, kind, id) -> (the other side's id, owner key)
        self._known: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._pending: dict[tuple[str, str, str], Pending] = {}
        # calls whose answers may mint ids, by their order in the lanes: (the kinds, answered), until the
        # primary's answer to each is in and what it minted is pending (`answering`)
        self._answering: dict[int, tuple[frozenset[str], asyncio.Future[None]]] = {}
        # owners of ids a primary minted, paired or not: a call naming an unpaired id is still
        # ordered (and marked out of step) on the right key
        self._owners: dict[tuple[str, str, str], str] = {}
        # ids whose minting call ended without a counterpart: (side, kind, scoped id) -> owner
        self._unpaired: dict[tuple[str, str, str], str] = {}

    def __len__(self) -> int:
        """Pairs held in memory."""
        return len(self._known) // 2

    async def preload(self) -> None:
        """Fill the memory with the most recent pairs of the store."""
        if self._store is None:
            return
        stored = self._store.pairs
        if sealed := await stored.seal_stored():  # stored as they were by a shim that did not seal them
            _log.warning("id pairs of redacted fields stored as they were are sealed", rows=sealed)
        pairs = await stored.recent(self._cache)
        if stored.unopened:
            _log.warning(
                "id pairs sealed under another redaction key are left out: their ids are unknown",
                pairs=stored.unopened,
            )
        for pair in reversed(pairs):  # oldest first: the newest are evicted last
            self._remember(pair.kind, pair.bank_id, pair.bk_id, pair.owner)
        self._whole = not self._shared and len(pairs) + stored.unopened < self._cache

    # -- synchronous lookups (ordering a call when it arrives) ---------------------------------

    def owner(self, side: str, kind: str, value: str) -> str | None:
        """The owner key of an id (None when the id is not known in memory)."""
        known = self._known.get((side, kind, value))
        if known is not None:
            return known[1]
        pending = self._pending.get((side, kind, value))
        if pending is not None:
            return pending.owner
        owner = self._owners.get((side, kind, value))
        return owner if owner is not None else self._unpaired.get((side, kind, value))

    def owner_for(self, side: str, kind: str, value: str) -> str | None:
        """The owner key of an id a client of `side` (the primary, whose ids it speaks) names, in `side`'s
        key space (the keys out of step with BK primary are BK's ids); None when not known in memory.

        The id is looked up as `side`'s own first, then as the other side's: a client keeps the ids it
        got in another mode (Bank's after a promotion, BK's after a rollback), and the pair, or what the
        other side minted, holds its owner. A pair's owner is read from Bank's answer (`learn`), an
        owner the other side minted from its own: an owner naming an id of some kind (an account id) is
        given as `side`'s id it pairs with."""
        for where in (side, other(side)):
            key = (where, kind, value)
            owner = self._pending[key].owner if key in self._pending else self._owners.get(key)
            if owner is None:
                owner = self._unpaired.get(key)
            space = where  # the side whose answer the owner was read from
            if owner is None and key in self._known:
                owner = self._known[key][1]
                space = "bank"
            if owner is not None:
                return owner if space == side else self._owner_as(owner, space)
        return None

    def key_as(self, side: str, key: str) -> str:
        """A routing key in `side`'s key space (the primary's, whose ids its clients speak): a key that is the
        other side's id of a kind the map pairs, and none of `side`'s own, is the id of `side` it pairs with
        (a client keeps the ids it got in another mode); any other key (a name both sides share) as it is."""
        if any(self.held(side, kind, key) for kind in self.fields.kinds):
            return key
        return self._owner_as(key, other(side))

    def _owner_as(self, owner: str, space: str) -> str:
        """`owner` (in `space`'s ids) in the other side's: each of its keys that `space` holds paired as an
        id of a kind is that kind's counterpart; any other key (a name both sides share) as it is."""
        keys = []
        for key in owner.split(OWNERS):
            counterparts = {k[0] for kind in self.fields.kinds if (k := self._known.get((space, kind, key)))}
            keys.append(counterparts.pop() if len(counterparts) == 1 else key)
        return OWNERS.join(keys)

    def known(self, side: str, kind: str, value: str) -> str | None:
        """The other side's id, if held in memory."""
        known = self._known.get((side, kind, value))
        return known[0] if known is not None else None

    # -- pending ids -------------------------------------------------------------------------

    def expect(
        self, side: str, found: Iterable[Found], scopes: Mapping[str, str], order: int = 0
    ) -> list[Pending]:
        """Ids minted by `side` whose counterparts the shadow's answer will tell, by a call of `order` in
        the lanes (0: not known). An id pending already (minted again: a page token of the same query) is
        pending from the earliest of its calls.

        `scopes` gives the query scope of each query-scoped kind."""
        out = []
        for one in found:
            scope = scopes.get(one.kind, "")
            key = (side, one.kind, _scoped(scope, one.value))
            if key in self._known and not scope:  # an id of one query may be minted again, paired anew
                continue
            if one.owner:
                self._owners[key] = one.owner
                while len(self._owners) > self._cache:
                    del self._owners[next(iter(self._owners))]
            pending = self._pending.get(key)
            if pending is None:
                future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
                pending = self._pending[key] = Pending(one.owner, future, key, order)
                future.add_done_callback(lambda _, key=key: self._pending.pop(key, None))  # type: ignore[misc]
            elif order and (not pending.order or order < pending.order):
                pending.order = order
            out.append(pending)
        return out

    def answering(self, order: int, kinds: frozenset[str]) -> asyncio.Future[None]:
        """A call of `order` in the lanes whose answer may mint ids of `kinds`. Until the future it gets is
        set (the primary's answer is in, what it minted is pending, or the call is over), a later call
        naming an id of those kinds that the map does not know waits for it (`counterpart`): on Envoy the
        copy of an answer and the next request a client made of it come on two streams, in either order."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._answering[order] = (kinds, future)
        future.add_done_callback(lambda _: self._answering.pop(order, None))
        return future

    async def _after_answers(self, kind: str, before: int, stop: asyncio.Event) -> bool:
        """Wait until the calls of an order lower than `before` whose answers may mint `kind` have their
        answers in (or `stop` is set); whether there were any. The calls are registered as they take their
        places, so in their order: the look stops at the first one of `before` or later."""
        earlier = itertools.takewhile(lambda item: item[0] < before, self._answering.items())
        waits = [future for _, (kinds, future) in earlier if kind in kinds]
        if not waits:
            return False
        self._counters.inc("ids_waited_for_answers", kind)
        await _all_done(waits, stop)
        return True

    def settle(self, pendings: Iterable[Pending]) -> None:
        """The minting calls are over: whatever was not learned has no counterpart; it is kept as unpaired
        (in memory and in the store), so that a call naming it is known to name a minted id."""
        unpaired: list[Unpaired] = []
        now = time.time()
        for pending in pendings:
            if pending.future.done():
                continue
            pending.future.set_result(None)
            side, kind, value = pending.key
            if not kind or (side, kind, value) in self._known:
                continue
            self._unpaired[pending.key] = pending.owner
            while len(self._unpaired) > self._cache:
                del self._unpaired[next(iter(self._unpaired))]
            unpaired.append(Unpaired(kind, side, value, pending.owner, now))
            self._counters.inc("ids_unpaired", kind)
        if unpaired and self._store is not None:
            self._store.pairs.put_unpaired(unpaired)

    def held(self, side: str, kind: str, value: str, scope: str = "") -> bool:
        """Whether `side` is known, from memory alone, to have minted `value`: paired, pending or unpaired."""
        key = (side, kind, _scoped(scope, value))
        return key in self._known or key in self._pending or key in self._owners or key in self._unpaired

    async def minted(self, side: str, kind: str, value: str, scope: str = "") -> bool:
        """Whether `side` is known to have minted `value` (paired, pending or unpaired), in memory or in
        the store; False for an id the map has never seen."""
        key = (side, kind, _scoped(scope, value))
        if self.held(side, kind, value, scope):
            return True
        if self._store is None:
            return False
        try:
            owner = await self._store.pairs.unpaired_owner(kind, side, key[2])
        except StoreError as exc:
            self._counters.inc("id_lookup_errors", kind)
            _log.warning("id lookup failed", kind=kind, error=str(exc))
            return True  # not known to be unknown: treated as minted (the call is not sent)
        if owner is not None:
            self._unpaired[key] = owner
            return True
        return False

    # -- learning ----------------------------------------------------------------------------

    def learn(self, pairs: Iterable[tuple[Found, Found]], scopes: Mapping[str, str]) -> int:
        """Record (Bank id, BK id) pairs; the first pair of an id wins, except for ids of one query (a page
        token minted again once the book changed), where the latest wins. Returns how many are new."""
        new: list[IdPair] = []
        of_queries: list[IdPair] = []  # stored replacing any pair either id was in
        now = time.time()
        for bank, bk in pairs:
            kind = bank.kind
            scope = scopes.get(kind, "")
            bank_id, bk_id = _scoped(scope, bank.value), _scoped(scope, bk.value)
            held = self._known.get(("bank", kind, bank_id))
            back = self._known.get(("bk", kind, bk_id))
            if held is not None or back is not None:
                if held is not None and held[0] == bk_id and back is not None and back[0] == bank_id:
                    self._resolve(kind, bank_id, bk_id)  # known already (an id of one query minted again)
                    continue
                if scope:  # minted again for its query, the book changed: the latest pair wins
                    self._forget_pair(kind, bank_id, held, bk_id, back)
                else:
                    self._counters.inc("id_conflicts", kind)
                    shown = self._shown
                    _log.warning(
                        "id pair conflicts with one learned earlier; the earlier one is kept",
                        kind=kind,
                        bank_id=shown(kind, bank_id),
                        bk_id=shown(kind, bk_id),
                        known_bk_id=shown(kind, held[0]) if held else None,
                        known_bank_id=shown(kind, back[0]) if back else None,
                    )
                    continue
            owner = bank.owner or bk.owner
            self._remember(kind, bank_id, bk_id, owner)
            if not scope and not self._whole:
                self._unchecked.append((kind, bank_id, bk_id))
            (of_queries if scope else new).append(IdPair(kind, bank_id, bk_id, owner, now))
            self._counters.inc("ids_learned", kind)
            self._resolve(kind, bank_id, bk_id)
        if self._store is not None:
            if new:
                self._store.pairs.put(new)
            if of_queries:
                self._store.pairs.replace(of_queries)
        return len(new) + len(of_queries)

    async def checked(self) -> None:
        """The pairs learned since the last check, against the store's: where the store pairs one of the two
        ids otherwise (a pair memory no longer holds, or one another replica learned first), the first pair
        wins there too, as in memory: a conflict, counted, and memory takes the store's pair."""
        if not self._unchecked or self._store is None:
            return
        unchecked, self._unchecked = self._unchecked, []
        try:
            stored = await self._store.pairs.either(unchecked)
        except StoreError as exc:
            self._counters.inc("id_lookup_errors", unchecked[0][0])
            _log.warning("id pairs not checked against the store", error=str(exc))
            return
        for kind, bank_id, bk_id in unchecked:
            rivals = [p for p in stored if p.kind == kind and (p.bank_id == bank_id) != (p.bk_id == bk_id)]
            if not rivals:
                continue
            self._counters.inc("id_conflicts", kind)
            shown = self._shown
            _log.warning(
                "id pair conflicts with one in the store; the store's is kept",
                kind=kind,
                bank_id=shown(kind, bank_id),
                bk_id=shown(kind, bk_id),
                stored=[(shown(kind, p.bank_id), shown(kind, p.bk_id)) for p in rivals],
            )
            held, back = self._known.get(("bank", kind, bank_id)), self._known.get(("bk", kind, bk_id))
            if held is not None and held[0] == bk_id:
                self._forget_pair(kind, bank_id, held, bk_id, back)
            for pair in rivals:
                self._remember(pair.kind, pair.bank_id, pair.bk_id, pair.owner)

    def _shown(self, kind: str, value: str) -> str:
        """An id as a log line shows it: its hash when its kind's fields are redacted."""
        return self._sealer.shown(kind, value) if self._sealer is not None else value

    def _resolve(self, kind: str, bank_id: str, bk_id: str) -> None:
        """The calls waiting for either id's counterpart have it."""
        for side, value, counterpart in (("bank", bank_id, bk_id), ("bk", bk_id, bank_id)):
            pending = self._pending.get((side, kind, value))
            if pending is not None and not pending.future.done():
                pending.future.set_result(counterpart)

    def _forget_pair(
        self, kind: str, bank_id: str, held: tuple[str, str] | None, bk_id: str, back: tuple[str, str] | None
    ) -> None:
        """Drop the pairs `bank_id` and `bk_id` are in (`held`: `bank_id`'s, `back`: `bk_id`'s)."""
        self._known.pop(("bank", kind, bank_id), None)
        self._known.pop(("bk", kind, bk_id), None)
        if held is not None:
            self._known.pop(("bk", kind, held[0]), None)
        if back is not None:
            self._known.pop(("bank", kind, back[0]), None)

    def _remember(self, kind: str, bank_id: str, bk_id: str, owner: str) -> None:
        self._known[("bank", kind, bank_id)] = (bk_id, owner)
        self._known[("bk", kind, bk_id)] = (bank_id, owner)
        while len(self._known) > 2 * self._cache:  # the oldest pair goes (both of its entries)
            self._whole = False
            (side, old_kind, value), (counterpart, _) = next(iter(self._known.items()))
            del self._known[(side, old_kind, value)]
            self._known.pop((other(side), old_kind, counterpart), None)

    # -- translating -------------------------------------------------------------------------

    def remembered(self, side: str, kind: str, value: str, scope: str = "") -> str | None:
        """The other side's id for `side`'s `value`, from memory only (None when not there)."""
        known = self._known.get((side, kind, _scoped(scope, value)))
        return None if known is None else _unscoped(scope, known[0])

    async def counterpart(
        self,
        side: str,
        kind: str,
        value: str,
        stop: asyncio.Event | None = None,
        scope: str = "",
        before: int = 0,
    ) -> str | None:
        """The other side's id for `side`'s `value`: from memory, a pending minting call
        (waited for until `stop` is set; not waited for without `stop`), or the store.
        None when no counterpart is known.

        With `before` (the asking call's order in the lanes), a minting call of a higher order is not
        waited for: it came later, and may be waiting behind the asking call (each would wait for the
        other). The id was minted before by a call whose pair is not known: no counterpart."""
        scoped = _scoped(scope, value)
        key = (side, kind, scoped)
        known = self._known.get(key)
        pending = self._pending.get(key)
        # an id of one query minted again by an earlier call still under way: its pair is the one that holds
        again = pending is not None and bool(scope) and not pending.future.done()
        if known is not None and not again:
            return _unscoped(scope, known[0])
        # not known yet: an earlier call's answer, not in yet, may mint it
        unknown = known is None and pending is None and stop is not None and before and self._answering
        if unknown and stop is not None and await self._after_answers(kind, before, stop):
            known, pending = self._known.get(key), self._pending.get(key)
            again = pending is not None and bool(scope) and not pending.future.done()
            if known is not None and not again:
                return _unscoped(scope, known[0])
        if pending is not None and stop is not None and _earlier(pending, before):
            result = await _until(pending.future, stop)
            if result is not None:
                return _unscoped(scope, result)
        if known is not None:
            return _unscoped(scope, self._known.get(key, known)[0])
        if self._store is None:
            return None
        try:
            pairs = await self._store.pairs.find(kind, side, [scoped])
        except StoreError as exc:
            self._counters.inc("id_lookup_errors", kind)
            _log.warning("id lookup failed", kind=kind, error=str(exc))
            return None
        for pair in pairs:
            self._remember(pair.kind, pair.bank_id, pair.bk_id, pair.owner)
            return _unscoped(scope, pair.bk_id if side == "bank" else pair.bank_id)
        return None


def _earlier(pending: Pending, before: int) -> bool:
    """Whether a call of order `before` may wait for `pending` (either order not known: it may)."""
    return not before or not pending.order or pending.order < before


async def _until(future: asyncio.Future[str | None], stop: asyncio.Event) -> str | None:
    if future.done():
        return future.result()
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((future, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    return future.result() if future.done() else None


async def _all_done(futures: list[asyncio.Future[None]], stop: asyncio.Event) -> None:
    waiter = asyncio.ensure_future(stop.wait())
    try:
        while not waiter.done() and (left := [f for f in futures if not f.done()]):
            awaited: list[asyncio.Future[Any]] = [*left, waiter]
            await asyncio.wait(awaited, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


def _scoped(scope: str, value: str) -> str:
    return f"{scope}|{value}" if scope else value


def _unscoped(scope: str, value: str) -> str:
    return value[len(scope) + 1 :] if scope and value.startswith(scope + "|") else value
