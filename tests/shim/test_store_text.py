"""Any text a client sends reaches the store intact, and one write the store refuses loses nothing else.

Routing keys, ids and aliases are read from the clients' messages, and a protobuf string may hold a NUL
character, which PostgreSQL refuses in text. That failed the store's whole batch, with the marks and
intents of other calls in it: a mark lost hides a divergence, an intent left behind is claimed as a mark
once its replica stops. Text now round-trips on every engine, NUL included; and a batch that fails for a
reason that will not pass is written again one write at a time, so only the write at fault is lost.
"""

from __future__ import annotations

import time

from shim.store import IdPair, Intent, OutOfStep, Store
from tests.shim import test_store as engines
from tests.shim.test_store import Opener, Target

target, open_store, store = engines.target, engines.open_store, engines.store

ODD = ["B\x00", "B\x00\x00x", "C\ufffe0", "\ufffe\ufffe", "plain"]  # NUL, and the escape's own character


async def test_keys_ids_and_reasons_with_a_nul_round_trip(store: Store) -> None:
    now = time.time()
    store.marks.put([OutOfStep(key, now, "/m.S/W", f"reason {key}") for key in ODD])
    await store.intents.put(Intent("i-1", now, "r:1", "/m.S/W", tuple(ODD)))
    store.pairs.put([IdPair("k", key, f"bk{key}", owner=key) for key in ODD])
    await store.flush()
    marks = {m.key: m.reason for m in await store.marks.out_of_step()}
    assert marks == {key: f"reason {key}" for key in ODD}
    assert [i.keys for i in await store.intents.all()] == [tuple(ODD)]
    found = await store.pairs.find("k", "bank", ODD)
    assert [(p.bank_id, p.bk_id, p.owner) for p in found] == [(key, f"bk{key}", key) for key in ODD]
    assert store.write_errors == 0


async def test_a_write_the_store_refuses_is_lost_alone(target: Target, open_store: Opener) -> None:
    store = await open_store(target.url)
    now = time.time()
    store.marks.put([OutOfStep("A1", now, "/m.S/W", "first")])
    store.enqueue("INSERT INTO no_such_table (x) VALUES (?)", [(1,)])  # refused, whatever the engine
    store.marks.put([OutOfStep("A2", now, "/m.S/W", "second")])
    await store.flush()
    assert sorted(m.key for m in await store.marks.out_of_step()) == ["A1", "A2"]
    assert store.write_errors == 1
