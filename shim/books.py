"""What the shim keeps in its store while it mirrors: the id map and key aliases, keys out of step and
their checks, the intents of mirrored writes, and the comparisons (with the counts of those not stored).

`Books.open` opens the store, writes this replica's first heartbeat (`shim.liveness`) and loads what
earlier runs and other replicas left there; `close` stops what reads it and closes it, within a time,
and removes the heartbeat last, once this replica's writes are judged. Housekeeping runs beside: it
records what was not stored, applies `store.retain`, and claims the intents of replicas gone silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable

import structlog

from shim import aliases, reconcile
from shim._lanes import Lanes
from shim.adapters import Channel
from shim.config import Config
from shim.errors import StartupError
from shim.evidence.record import CountsFlusher, StoreSink
from shim.ids import IdBook
from shim.intents import Intents
from shim.liveness import Liveness, lease_of
from shim.parts import Parts
from shim.shadow import fleet
from shim.shadow.lateness import KeyLateness
from shim.steps import Steps
from shim.store import Store, StoreError
from shim.store.key_order import KeyOrder
from shim.verify import Verifier

_log = structlog.get_logger("shim")
STOP_WITHIN = 1.0  # seconds a stopping replica gives the store to forget its heartbeat
LAST_WITHIN = 0.25  # ... at least, when the stop's time is spent (the heartbeat is then left to the lease)


def judged_by(config: Config) -> str:
    """A fingerprint of the settings that decide a comparison's verdict: the rules and the ids' settings."""
    text = json.dumps({"rules": config.rules, "ids": config.ids}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Books:
    """The store and what the shim keeps in it; every part is None until `open` (and without BK)."""

    def __init__(self) -> None:
        self.store: Store | None = None
        self.steps: Steps | None = None  # keys out of step
        self.intents: Intents | None = None  # mirrored writes not yet judged
        self.ids: IdBook | None = None  # the id map
        self.aliases: aliases.KeyAliases | None = None
        self.sink: StoreSink | None = None  # comparisons into the store
        self.verifier: Verifier | None = None  # checks of keys out of step
        self.key_order: KeyOrder | None = None  # writes' order across replicas (ordering.across_replicas)
        # how late each key's writes went to each side, kept across switches (each side's mirroring its own)
        self.lateness = KeyLateness()
        # on PostgreSQL a connection of the fleet's own (the heartbeat, switches), never behind the
        # comparisons' writes; on SQLite the store
        self.fleet_store: Store | None = None
        self.liveness: Liveness | None = None  # this replica's heartbeat
        self.lease = 0.0  # seconds of silence after which a replica is taken for gone (store.lease)
        self._housekeeping: asyncio.Task[None] | None = None
        self.judging = ""  # the fingerprint of what judges this replica's comparisons (`judged_by`)
        self._replica = ""

    async def open(self, config: Config, parts: Parts) -> Store:
        """Open the store and load the id map, the aliases and the keys out of step from it."""
        try:
            store = Store.open(config.store.url)
            await store.start()
        except StoreError as exc:
            raise StartupError(str(exc)) from exc
        self.store = store
        self._replica = parts.replica
        await self.judge_by(config, say=False)
        counters = parts.counters
        self.steps = Steps(store, counters, refresh=config.store.refresh, replica=parts.replica)
        self.intents = Intents(store, parts.replica, counters)
        refresh = max(config.store.refresh, 0.05)
        self.lease = lease_of(refresh, config.store.lease)
        try:
            self.fleet_store = await self._fleet_connection(store)
            self.liveness = Liveness(self.fleet_store, parts.replica, refresh)
            await self.liveness.start()
            await self.steps.start()
            if parts.id_fields is not None:
                shared = store.conninfo is not None or config.serving.workers > 1  # others learn into it
                self.ids = IdBook(
                    parts.id_fields,
                    store,
                    counters,
                    cache=config.store.id_cache,
                    shared=shared,
                    sealer=parts.sealer,
                )
                await self.ids.preload()
            if parts.alias_fields is not None:
                self.aliases = aliases.KeyAliases(
                    parts.alias_fields,
                    store,
                    counters,
                    cache=config.store.id_cache,
                    sealer=parts.alias_sealer,
                )
                await self.aliases.preload()
            if config.ordering.across_replicas:
                self.key_order = KeyOrder(
                    config.store.url, parts.replica, self.lease, self._released, config.ordering.clock_skew
                )
                await self.key_order.start()
        except StoreError as exc:
            await self.close()
            raise StartupError(str(exc)) from exc
        self.sink = StoreSink(
            store,
            replica=parts.replica,
            max_buffer=config.store.max_buffer,
            max_buffer_bytes=config.store.max_buffer_bytes,
            payloads=config.store.payloads,
            keep=parts.payload_filter(),
        )
        return store

    @staticmethod
    async def _fleet_connection(store: Store) -> Store:
        if store.conninfo is None:
            return store
        own = Store.open(store.conninfo)
        try:
            await own.start()
        except StoreError as exc:
            _log.warning("the heartbeat and fleet switches share the store's connection", error=str(exc))
            return store
        return own

    def _released(self, key: str, replica: str, method: str) -> None:
        """A silent replica's ticket on `key` was released: its write may or may not have reached BK."""
        if self.steps is not None:
            self.steps.mark([key], method, fleet.RELEASED.format(replica=replica))

    def start_verifier(
        self,
        config: Config,
        parts: Parts,
        bank: Channel,
        bk: Channel,
        lanes: Callable[[], Lanes | None],
    ) -> Verifier | None:
        """Keys out of step are verified with the [reconcile] reads, when the config has them."""
        if config.reconcile is None or self.steps is None or parts.registry is None:
            return None
        timeout = max(config.bank.timeout, config.bk.timeout if config.bk is not None else 0.0, 5.0)
        sweep = reconcile.Sweep(
            config.reconcile,
            parts.registry,
            parts.rules,
            bank,
            bk,
            self.ids,
            timeout=timeout,
            redactor=parts.redactor,
        )
        shadow_timeout = min(config.bank.timeout, config.bk.timeout if config.bk is not None else 2.0)
        within = max(shadow_timeout / 2, 0.05)
        quick = reconcile.Sweep(  # for a check that holds the key's place: within half the shadow's time
            config.reconcile,
            parts.registry,
            parts.rules,
            bank,
            bk,
            self.ids,
            timeout=within,
            redactor=parts.redactor,
        )
        verifier = Verifier(
            sweep.marked,
            self.steps,
            lanes,
            self.store,
            parts.counters,
            parts.replica,
            settle=config.verify.settle,
            attempts=config.verify.attempts,
            check_now=quick.marked,
            now_within=within,
            fleet=self.key_order.position if self.key_order is not None else None,
            redacting=parts.redactor is not None,
        )
        self.steps.listen(verifier.schedule)
        for mark in self.steps.keys.values():  # marks left by earlier runs or other replicas
            if mark.key != "*":
                verifier.schedule(mark)
        self.verifier = verifier
        return verifier

    def start_housekeeping(self, config: Config, parts: Parts) -> None:
        assert self.store is not None
        assert self.sink is not None
        counts = CountsFlusher(self.store, parts.counters, self.sink)
        self._housekeeping = asyncio.get_running_loop().create_task(
            self._keep_house(config, parts, counts), name="store housekeeping"
        )

    async def recover_intents(self, config: Config, parts: Parts, starting: bool = False) -> int:
        """Claim the intents of mirrored writes whose replica is gone (silent past the lease; `starting`:
        also a process gone from this host): their keys go out of step (and are verified). Returns how
        many were claimed."""
        assert self.intents is not None
        stale = max(config.bank.timeout, config.bk.timeout if config.bk is not None else 0.0)
        stale += config.serving.grace_period + 30.0
        try:
            orphans = await self.intents.orphans(self.lease, stale, local=starting)
        except StoreError as exc:
            _log.warning("intents not read", error=str(exc))
            return 0
        for intent in orphans:
            parts.counters.inc("intents_orphaned", intent.method)
            if self.steps is not None:
                self.steps.mark(
                    intent.keys,
                    intent.method,
                    f"a mirrored write was in flight when its shim ({intent.replica}) stopped without"
                    " recording its outcome: whether BK applied it is unknown",
                )
        if orphans:
            _log.warning("mirrored writes lost by a stopped shim", writes=len(orphans))
        return len(orphans)

    async def _keep_house(self, config: Config, parts: Parts, counts: CountsFlusher) -> None:
        """Now and then: record what was not stored; delete comparisons (and recordings) older than
        store.retain."""
        assert self.store is not None
        retain, last_retention = config.store.retain, 0.0
        try:
            while True:
                if retain is not None and time.time() - last_retention >= min(retain, 3600.0):
                    last_retention = time.time()
                    try:
                        gone = await self.store.comparisons.delete_before(last_retention - retain)
                        recordings = await self.store.recordings.delete_before(last_retention - retain)
                    except StoreError as exc:
                        _log.warning("retention failed", error=str(exc))
                    else:
                        if gone or recordings:
                            _log.info("retention", deleted=gone, recordings=recordings, older_than_s=retain)
                for _ in range(5):  # intents every refresh: a silent replica's are claimed within one
                    await asyncio.sleep(max(config.store.refresh, 0.05))
                    if self.intents is not None:
                        await self.recover_intents(config, parts)
                    await self._judge()
                counts.flush()
        finally:
            counts.flush()

    async def judge_by(self, config: Config, say: bool = True) -> None:
        """Record in the store what judges this replica's comparisons from now on (`judged_by`), when the
        store's latest record says otherwise: the gate then judges only the evidence after it. At start and
        at a reload of the rules; and again every refresh (`_keep_house`), so that while one replica judges
        by other rules than another (a rolling restart half done) neither one's evidence counts."""
        self.judging = judged_by(config)
        if await self._judge() and say:  # (at start: `shim gate` says it; the ready line comes first)
            _log.info("the comparisons are judged by other rules: the gate judges the evidence from now on")

    async def _judge(self) -> bool:
        assert self.store is not None
        try:
            return await self.store.judging.judged_by(self.judging, self._replica, time.time())
        except StoreError as exc:  # said again at the next refresh
            _log.warning("what judges the comparisons is not recorded yet", error=str(exc))
            return False

    async def close(self, within: float | None = None) -> None:
        """Stop what reads the store, then close it, waiting at most `within` seconds for it to commit
        (a database that does not answer: see Store.close); the writes' order across replicas writes its
        tickets done in the same time, beside it (`KeyOrder.close`). The heartbeat, on a store of its own,
        goes after them, in what is left of `within` (at least `LAST_WITHIN`): with both stores
        unanswering, the stop takes `within` and a quarter of a second, not a second more."""
        started = asyncio.get_running_loop().time()
        if self.verifier is not None:
            await self.verifier.stop()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self.steps is not None:
            await self.steps.stop()
        ordering: asyncio.Task[None] | None = None  # the tickets done, written beside the store's writes
        if self.key_order is not None:
            ordering = asyncio.get_running_loop().create_task(
                self.key_order.close(within), name="key order: close"
            )
            self.key_order = None
        shared = self.fleet_store is self.store  # SQLite: the heartbeat goes once the intents are written
        if self.liveness is not None and shared:
            if ordering is not None:  # ... and the tickets done
                await ordering
            await self.liveness.stop()
        if self.store is not None:
            await self.store.close(within)
        if ordering is not None:
            await ordering
        if not shared:  # it holds no write of anyone's: a store that does not answer is left to it
            left = STOP_WITHIN
            if within is not None:
                left = max(within - (asyncio.get_running_loop().time() - started), LAST_WITHIN)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    if self.liveness is not None:
                        await self.liveness.stop(within=left)
                    if self.fleet_store is not None:
                        await self.fleet_store.close()
        self.liveness = self.fleet_store = None
