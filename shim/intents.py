"""Crash-safe intents: a mirrored write is written down before it is sent.

Before the shim sends a write to the shadow, it records an *intent* (the
method and the write's routing keys) and waits for the store to commit it.
When the write has been judged (both outcomes known, its keys marked out of
step if the sides did not do alike), the intent is deleted. So a shim killed
at any point leaves, in the store, exactly the writes whose fate it never
recorded.

Such orphaned intents are claimed by the replicas still running, every
`store.refresh`, wherever their writer ran: an intent is orphaned when its
replica's heartbeat (`shim.liveness`, on the database's clock) is older than
`store.lease`. So a replica's death is followed by the claim of its intents
within the lease and one refresh. A shim that starts also claims at once those
of a process gone from its own host (no such pid, or its own pid under another name: the process that
had it before, in a container restarted in its pod). Each process is a replica of its own, its name
drawn at its start (`host:pid:tag`), so a process started again under the same host and pid never takes
its predecessor's intents for its own. An intent whose writer has
no heartbeat at all (a shim of an earlier release) is orphaned once its
process is gone from this host or it is older than any mirrored call can last.
A live replica's intents are never claimed.

Claiming deletes the row, so one replica handles each; the keys of a claimed
intent are marked out of step, then verified (`shim.verify`). A replica merely
silent past its lease (a long pause) may have its intents claimed while its
writes still run: their keys are marked (stricter, never less strict), and
its writes, when they finish, are judged as usual; deleting an intent claimed
already deletes nothing. An orphaned intent without keys marks nothing: a
write the shim cannot key cannot be placed (it is logged and counted, and
`shim reconcile` finds what it changed).
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


def _alive(replica: str, me: str) -> bool:
    """Whether the process named `replica` ("host:pid:tag", or an earlier release's "host:pid") may still
    run: another host's always may; on this host, not when its pid is gone, nor when its pid is this
    process's own and the name is not `me` (an earlier process given the same pid: a container restarted
    in its pod)."""
    host, _, rest = replica.partition(":")
    pid = rest.partition(":")[0]
    if replica == me or host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return False
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

    async def orphans(self, lease: float, stale: float, local: bool = False) -> list[Intent]:
        """Claim the intents of replicas silent for more than `lease` seconds; of those without a heartbeat,
        the ones whose process is gone from this host or older than `stale` seconds; `local`: also every
        intent of a process gone from this host."""
        now = time.time()
        found = await self._store.intents.of_silent(self.replica, lease)
        if local:
            seen = {intent.id for intent, _ in found}
            found += [
                (intent, None)
                for intent in await self._store.intents.all()
                if intent.replica != self.replica
                and intent.id not in seen
                and not _alive(intent.replica, self.replica)
            ]
        claimed = []
        for intent, silent in found:
            if silent is None and now - intent.at < stale and _alive(intent.replica, self.replica):
                continue  # no heartbeat, not known to be gone: a replica of an earlier release, maybe
            if await self._store.intents.claim(intent.id):  # another replica may have claimed it first
                claimed.append(intent)
        return claimed
