"""Crash-safe intents: a mirrored write is written down before it is sent.

Before the shim sends a write to the shadow, it records an *intent* (the
method and the write's routing keys) and waits for the store to commit it.
When the write has been judged (both outcomes known, its keys marked out of
step if the sides did not do alike), the intent is deleted. So a shim killed
at any point leaves, in the store, exactly the writes whose fate it never
recorded.

Such orphaned intents are claimed by the next shim that starts on the store,
and by running replicas now and then: an intent is orphaned when the process
that wrote it is gone (same host, no such pid) or when it is older than any
mirrored call can last. Claiming deletes the row, so one replica handles each;
the keys of a claimed intent are marked out of step, then verified
(`shim.verify`). An orphaned intent without keys marks nothing: a write the
shim cannot key cannot be placed (it is logged and counted, and `shim
reconcile` finds what it changed).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence

import structlog

from shim.metrics import Counters
from shim.store import Intent, Store, StoreError

_log = structlog.get_logger("shim.intents")


def _alive(replica: str) -> bool:
    """Whether the process named `replica` ("host:pid") may still run: another host's always may."""
    host, _, pid = replica.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Intents:
    """The intents of one replica, in the store."""

    def __init__(self, store: Store, replica: str, counters: Counters) -> None:
        self._store = store
        self.replica = replica
        self._counters = counters

    async def record(self, intent_id: str, method: str, keys: Sequence[str]) -> None:
        """Write the intent down and wait for the commit; a store that fails is logged and counted, and the
        write goes on (not sending it would put its keys out of step for certain)."""
        try:
            await self._store.intents.put(Intent(intent_id, time.time(), self.replica, method, tuple(keys)))
        except StoreError as exc:
            self._counters.inc("intents_not_recorded", method)
            _log.warning("intent not recorded; the write is mirrored anyway", method=method, error=str(exc))

    def done(self, intent_id: str) -> None:
        """The write was judged: forget the intent (committed with the next batch)."""
        self._store.intents.delete(intent_id)

    async def orphans(self, stale: float) -> list[Intent]:
        """Claim the intents whose writer is gone or which are older than `stale` seconds."""
        now = time.time()
        claimed = []
        for intent in await self._store.intents.all():
            if intent.replica == self.replica or (now - intent.at < stale and _alive(intent.replica)):
                continue
            if await self._store.intents.claim(intent.id):  # another replica may have claimed it first
                claimed.append(intent)
        return claimed
