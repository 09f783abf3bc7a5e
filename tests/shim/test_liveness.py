"""One heartbeat for a replica's liveness (`shim.liveness`, `store.liveness`), on every engine, and what
it decides: the intents of a replica silent past its lease are claimed by a live one within the lease
and one refresh, wherever it ran; a live replica's never are; a claimed write finishing later on its
replica fails nothing. The fleet's views are heard from by it too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.intents import Intents
from shim.liveness import Liveness, lease_of
from shim.metrics import Counters
from shim.store import Intent, ReplicaView, Store
from tests.backends import forwarding
from tests.helpers import ROOT, postgres_schema_url, until
from tests.processes import pid_namespaces, shim_process
from tests.shim import test_store as engines
from tests.shim.test_evidence_store import _postgres_sql, _sqlite_sql

# every engine; stores closed at the end
target, open_store, store = engines.target, engines.open_store, engines.store

LEASE, REFRESH = 0.5, 0.1  # of the replicas here (seconds)
STALE = 0.01  # the age past which an intent of a replica with no heartbeat would be taken for lost


def _intent(name: str, replica: str, *keys: str) -> Intent:
    """An intent written a second ago."""
    return Intent(name, time.time() - 1.0, replica, "/bank.v1.Ledger/Deposit", keys)


async def _claiming(intents: Intents, claimed: dict[str, float], stop: asyncio.Event) -> None:
    """A live replica's recovery: a look every REFRESH; when each intent was claimed."""
    while not stop.is_set():
        for intent in await intents.orphans(LEASE, STALE):
            assert intent.id not in claimed, f"{intent.id} claimed twice"
            claimed[intent.id] = time.monotonic()
        await asyncio.sleep(REFRESH)


def test_the_lease_is_at_least_three_heartbeats() -> None:
    """store.lease is raised to three times store.refresh, never lowered."""
    assert lease_of(1.0, 3.0) == 3.0
    assert lease_of(2.0, 3.0) == 6.0
    assert lease_of(0.05, 10.0) == 10.0


async def test_a_heartbeat_goes_on_on_the_stores_clock_and_goes_once_stopped(store: Store) -> None:
    """A replica's silence, as the store measures it, is under a refresh while it beats, even after its
    row was set an hour back; once it stops cleanly its heartbeat is gone."""
    liveness = Liveness(store, "a:1", REFRESH)
    await liveness.start()
    try:
        assert (await store.liveness.silence())["a:1"] < 1.0
        await store.execute("UPDATE shim_replicas SET seen = seen - 3000 WHERE replica = ?", ("a:1",))
        assert (await store.liveness.silence())["a:1"] > 2999
        deadline = time.monotonic() + 10 * REFRESH + 5.0  # 5 s: a loaded machine
        while (await store.liveness.silence())["a:1"] > 1.0:
            assert time.monotonic() < deadline, "no heartbeat after the row was set back"
            await asyncio.sleep(0.01)
    finally:
        await liveness.stop()
    assert "a:1" not in await store.liveness.silence()


async def test_a_dead_replicas_intents_are_claimed_once_within_the_lease_and_a_refresh(store: Store) -> None:
    """A replica on another host beats once, records two intents and dies (no pid to look for there):
    two live replicas looking every refresh claim its intents once each, not before its lease passed
    and within the lease and one refresh of its last heartbeat; a third replica, beating, keeps its own
    intent, however old, throughout."""
    dead, alive = "elsewhere-a:4242", "elsewhere-b:4343"
    counters = Counters()
    before_beat = time.monotonic()  # the beat's time, by the store's clock, is between these two
    await store.liveness.beat(dead)
    last_beat = time.monotonic()
    await Intents(store, dead, counters).record("w1", "/bank.v1.Ledger/Deposit", ["K1"])
    await Intents(store, dead, counters).record("w2", "/bank.v1.Ledger/Deposit", ["K2", "K3"])
    beating = Liveness(store, alive, REFRESH)
    await beating.start()
    await Intents(store, alive, counters).record("w3", "/bank.v1.Ledger/Deposit", ["K4"])
    claimed: dict[str, float] = {}
    stop = asyncio.Event()
    lookers = [
        asyncio.ensure_future(_claiming(Intents(store, f"here:{n}", counters), claimed, stop)) for n in (1, 2)
    ]
    try:
        await until(lambda: len(claimed) == 2, "the dead replica's intents claimed")
        await asyncio.sleep(3 * LEASE)  # the live replica's intent stays unclaimed meanwhile
    finally:
        stop.set()
        await asyncio.gather(*lookers)
        await beating.stop()
    assert sorted(claimed) == ["w1", "w2"]
    not_before = [moment - before_beat for moment in claimed.values()]
    assert all(t >= LEASE - 0.002 for t in not_before), not_before  # 2 ms: the store clock's rounding
    within = [moment - last_beat for moment in claimed.values()]
    assert all(t <= LEASE + REFRESH + 0.5 for t in within), within  # 0.5 s: a loaded machine
    assert [intent.id for intent in await store.intents.all()] == ["w3"]


async def test_a_replica_without_a_heartbeat_keeps_the_rule_of_its_release(store: Store) -> None:
    """An intent whose writer has no heartbeat at all (a release before it) on another host is claimed
    once older than `stale`, not before."""
    counters = Counters()
    await store.intents.put(_intent("old", "earlier-release:1", "K1"))
    here = Intents(store, "here:1", counters)
    assert await here.orphans(LEASE, 3600.0) == []
    [claimed] = await here.orphans(LEASE, STALE)
    assert claimed.id == "old"


async def test_a_claimed_intent_finishing_on_its_slow_replica_fails_nothing(store: Store) -> None:
    """A replica silent past its lease (a pause) has its intent claimed; when its write is then judged,
    the delete of its intent deletes nothing and fails nothing, and its next intents are its own again
    once it beats."""
    counters = Counters()
    slow = Intents(store, "slow:1", counters)
    await store.liveness.beat("slow:1")
    await slow.record("w1", "/bank.v1.Ledger/Deposit", ["K1"])
    await store.execute("UPDATE shim_replicas SET seen = seen - 60 WHERE replica = ?", ("slow:1",))
    [claimed] = await Intents(store, "here:1", counters).orphans(LEASE, STALE)
    assert claimed.id == "w1"
    slow.done("w1")  # its write judged, after all
    await store.liveness.beat("slow:1")  # and it beats again
    await slow.record("w2", "/bank.v1.Ledger/Deposit", ["K1"])
    await store.flush()
    assert store.write_errors == 0
    assert counters.get("intents_not_recorded", "/bank.v1.Ledger/Deposit") == 0
    assert await Intents(store, "here:1", counters).orphans(LEASE, STALE) == []
    assert [intent.id for intent in await store.intents.all()] == ["w2"]


async def test_an_intent_the_store_did_not_commit_is_counted_not_recorded(tmp_path: Path) -> None:
    """Another process (a worker of `--workers N` in a long transaction) holds the SQLite file's write lock
    past busy_timeout: the intent's batch is kept for another try, and `record` returns only once the
    intent is committed, or with it counted `intents_not_recorded` (and logged). Before, it returned as if
    committed: the write was mirrored with no intent in the file, and no count."""
    import sqlite3

    path = tmp_path / "shim.db"
    store = Store.open(str(path))
    await store.start()
    counters = Counters()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        await Intents(store, "me:1:abc", counters).record("intent-1", "/bank.v1.Ledger/Deposit", ("A1",))
        reader = sqlite3.connect(path, isolation_level=None)
        stored = reader.execute("SELECT id FROM intents").fetchall()
        reader.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
    not_recorded = counters.get("intents_not_recorded", "/bank.v1.Ledger/Deposit")
    await store.flush()  # kept, it is committed once the lock goes
    later = [intent.id for intent in await store.intents.all()]
    await store.close()
    assert (stored, not_recorded, later) == ([], 1, ["intent-1"])


async def test_a_views_heartbeat_is_the_replicas_liveness(store: Store) -> None:
    """A view published long ago whose replica beats is heard from now; one whose replica has no
    heartbeat keeps the time it was published with."""
    long_ago = time.time() - 600
    await store.fleet.publish(ReplicaView("a:1", {"*": "shadow"}, long_ago, long_ago))
    await store.fleet.publish(ReplicaView("b:2", {"*": "shadow"}, long_ago, long_ago))
    await store.liveness.beat("a:1")
    views = {view.replica: view for view in await store.fleet.views()}
    assert abs(views["a:1"].heartbeat - time.time()) < 5.0
    assert views["b:2"].heartbeat == long_ago


@pytest.mark.parametrize("silent", [LEASE * 2, LEASE / 5])
async def test_only_intents_of_replicas_silent_past_the_lease_are_listed(store: Store, silent: float) -> None:
    """`of_silent` lists another replica's intents when its heartbeat is older than the lease (by the
    store's clock), never this replica's own, and not while the other is heard from within it."""
    started = time.monotonic()
    await store.liveness.beat("other:1")
    await store.liveness.beat("me:1")
    await store.execute("UPDATE shim_replicas SET seen = seen - ?", (silent,))
    await store.intents.put(_intent("theirs", "other:1", "K1"))
    await store.intents.put(_intent("mine", "me:1", "K2"))
    listed = await store.intents.of_silent("me:1", LEASE)
    took = time.monotonic() - started
    if silent > LEASE:
        assert [intent.id for intent, _ in listed] == ["theirs"]
        [(_, age)] = listed
        # its silence is the time set back plus however long the steps above took on a loaded machine
        assert age is not None
        assert silent - 0.002 <= age <= silent + took + 0.002, (age, silent, took)
    else:
        assert listed == []


# -- a shim process on PostgreSQL, and a replica dead on another host ---------------------------------------


def _config(tmp_path: Path) -> Path:
    """The sample's config, its files named absolutely; a short refresh and lease, a quick first check."""
    text = (SAMPLE / "shim.toml").read_text(encoding="utf-8")
    text = text.replace('["bank.binpb"]', f'["{SAMPLE / "bank.binpb"}"]')
    text = text.replace('["rules.toml"]', f'["{SAMPLE / "rules.toml"}"]')
    text = text.replace(
        "[store]\n", f'[store]\nrefresh = "{SHIM_REFRESH:g}s"\nlease = "{SHIM_LEASE:g}s"\n', 1
    )
    config = tmp_path / "shim.toml"
    config.write_text(text + '\n[verify]\nsettle = "100ms"\n', encoding="utf-8")
    return config


SAMPLE = ROOT / "sample_ledger"
SHIM_REFRESH, SHIM_LEASE = 0.2, 1.0
DEPOSIT = "/bank.v1.Ledger/Deposit"


async def test_a_shim_marks_and_verifies_the_keys_of_a_replica_dead_on_another_host(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A `shim serve` on a PostgreSQL store; the test writes there the heartbeats of two replicas on
    other hosts and an intent of each (a mirrored write in flight), then keeps one beating and lets the
    other die. The shim marks the dead one's key out of step within its lease and one refresh of its
    last heartbeat (not before the lease), and verifies it; the live one's key is never marked and its
    intent stays."""
    bank, bk = ledgers
    dead, alive = "elsewhere-a:4242", "elsewhere-b:4343"
    with postgres_schema_url() as url:
        sql = _postgres_sql(url)
        args = [
            "--config", _config(tmp_path), "--listen", "127.0.0.1:0", "--bank", bank.address,
            "--bk", bk.address, "--store", url, "--dataplane", "python", "--diff-log", "/dev/null",
        ]  # fmt: skip
        async with shim_process(*args):
            before = time.time()  # the dead replica's last heartbeat is after this, by this machine's clock
            for replica, key in ((dead, "DEAD1"), (alive, "LIVE1")):
                sql(
                    "INSERT INTO shim_replicas (replica, seen)"
                    f" VALUES ('{replica}', extract(epoch from clock_timestamp()))"
                )
                sql(
                    "INSERT INTO intents (id, at, replica, method, keys)"
                    f" VALUES ('{key}-write', {time.time()}, '{replica}', '{DEPOSIT}', '[\"{key}\"]')"
                )
            last_beat = time.time()  # and before this (the shim's clock is this machine's)
            stop = asyncio.Event()

            async def beating() -> None:
                while not stop.is_set():
                    await asyncio.to_thread(
                        sql,
                        "UPDATE shim_replicas SET seen = extract(epoch from clock_timestamp())"
                        f" WHERE replica = '{alive}'",
                    )
                    await asyncio.sleep(SHIM_REFRESH)

            beat = asyncio.ensure_future(beating())
            try:
                await until(
                    lambda: sql("SELECT result FROM verifications WHERE key = 'DEAD1'"),
                    "the dead replica's key marked and verified",
                    within=30,
                )
                await asyncio.sleep(3 * SHIM_LEASE)  # the live replica's key stays unmarked meanwhile
            finally:
                stop.set()
                await beat
            [(since, reason)] = sql("SELECT since, reason FROM verifications WHERE key = 'DEAD1'")[:1]
            live_marks = sql("SELECT key FROM out_of_step UNION SELECT key FROM verifications")
            intents = sql("SELECT id FROM intents")
    assert dead in reason, reason
    assert since - before >= SHIM_LEASE, since - before
    assert since - last_beat <= SHIM_LEASE + SHIM_REFRESH + 1.0, since - last_beat  # 1 s: a loaded machine
    assert ("LIVE1",) not in live_marks
    assert intents == [("LIVE1-write",)]


async def test_a_replica_killed_with_a_write_in_flight_has_its_key_marked_and_checked_by_another(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Two `shim serve` replicas on one PostgreSQL store; one is killed (-9) while BK holds the deposit it
    mirrored. The other, still running, claims its intent, marks the account out of step within the
    lease and one refresh of the kill, and checks it: the books differ (BK never got the deposit)."""
    bank, bk = ledgers
    with postgres_schema_url() as url:
        sql = _postgres_sql(url)
        async with forwarding(bk.address) as (proxy, front):
            args = [
                "--config", _config(tmp_path), "--listen", "127.0.0.1:0", "--bank", bank.address,
                "--bk", front.address, "--store", url, "--dataplane", "python", "--diff-log", "/dev/null",
            ]  # fmt: skip
            async with shim_process(*args) as survivor, shim_process(*args) as victim:
                async with aio.insecure_channel(victim.ready["listen"]) as channel:
                    stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                    await stub.OpenAccount(pb.OpenAccountRequest(account_id="K1", initial_deposit="10"))
                    await until(
                        lambda: "K1" in bk.servicer.book.accounts and not sql("SELECT id FROM intents"),
                        "the opening mirrored and judged",  # its intent is stored after Bank's answer
                    )
                    proxy.held.add("/Deposit")  # BK never gets the deposit
                    await stub.Deposit(pb.DepositRequest(account_id="K1", amount="5"))  # Bank applies it
                    await until(lambda: proxy.arrived == 1, "the mirrored deposit held in front of BK")
                    assert sql("SELECT replica FROM intents") == [(victim.replica,)]
                await victim.kill_9()
                killed = time.time()
                await until(
                    lambda: sql("SELECT result FROM verifications WHERE key = 'K1'"),
                    "the account checked by the surviving replica",
                    within=30,
                )
                [(since, reason, by, result, detail)] = sql(
                    "SELECT since, reason, replica, result, detail FROM verifications WHERE key = 'K1'"
                )[:1]
                left = sql("SELECT id FROM intents")
    assert victim.replica in reason, reason
    assert by == survivor.replica
    assert since - killed <= SHIM_LEASE + SHIM_REFRESH + 1.0, since - killed  # 1 s: a loaded machine
    assert (result, left) == ("differs", []), (result, detail)


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "postgres, across replicas"])
async def test_a_replica_started_again_under_the_same_host_and_pid_claims_what_the_dead_one_left(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, engine: str
) -> None:
    """A `shim serve` in a PID namespace of its own (a container) is killed (-9) while BK holds the deposit
    it mirrored, and started again there: same host name, same pid. It is another replica all the same:
    as it starts it claims the intent its predecessor left (it does not take its predecessor's writes for
    its own), and marks the account out of step. With `[ordering] across_replicas`, its next write on the
    account waits for its predecessor's ticket, not taken for its own either, and releases it."""
    if why := pid_namespaces():
        pytest.skip(why)
    bank, bk = ledgers
    with contextlib.ExitStack() as stack:
        if engine.startswith("postgres"):
            url = stack.enter_context(postgres_schema_url())
            sql = _postgres_sql(url)
        else:
            url = str(tmp_path / "shim.db")
            sql = _sqlite_sql(tmp_path / "shim.db")
        async with forwarding(bk.address) as (proxy, front):
            config = _config(tmp_path)
            if engine.endswith("across replicas"):
                config.write_text(config.read_text() + "\n[ordering]\nacross_replicas = true\n")
            args = [
                "--config", config, "--listen", "127.0.0.1:0", "--bank", bank.address,
                "--bk", front.address, "--store", url, "--dataplane", "python", "--diff-log", "/dev/null",
            ]  # fmt: skip
            async with shim_process(*args, pid_namespace=True) as victim:
                async with aio.insecure_channel(victim.ready["listen"]) as channel:
                    stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                    await stub.OpenAccount(pb.OpenAccountRequest(account_id="K1", initial_deposit="10"))
                    await until(
                        lambda: "K1" in bk.servicer.book.accounts and not sql("SELECT id FROM intents"),
                        "the opening mirrored and judged",  # its intent is stored after Bank's answer
                    )
                    proxy.held.add("/Deposit")  # BK never gets the deposit
                    await stub.Deposit(pb.DepositRequest(account_id="K1", amount="5"))  # Bank applies it
                    await until(lambda: proxy.arrived == 1, "the mirrored deposit held in front of BK")
                    assert sql("SELECT replica FROM intents") == [(victim.replica,)]
                await victim.kill_9()
            async with shim_process(*args, pid_namespace=True) as again:
                left_at_start = sql("SELECT replica FROM intents")

                def reasons() -> list[str]:
                    return [
                        str(reason)
                        for (reason,) in sql(
                            "SELECT reason FROM out_of_step WHERE key = 'K1'"
                            " UNION SELECT reason FROM verifications WHERE key = 'K1'"
                        )
                    ]

                await until(reasons, "the account marked out of step", within=10.0)
                lost = await again.until_event("mirrored writes lost by a stopped shim")
                marked = reasons()
                released = None
                if engine.endswith("across replicas"):
                    proxy.held.discard("/Deposit")
                    async with aio.insecure_channel(again.ready["listen"]) as channel:
                        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                        await stub.Deposit(pb.DepositRequest(account_id="K1", amount="1"))
                    released = await again.until_event("ticket of a replica gone released", within=10.0)
                    await until(lambda: not sql("SELECT key FROM shim_key_tickets"), "every ticket done")
    assert (again.ready["pid"], socket.gethostname()) == (victim.ready["pid"], os.uname().nodename)
    assert again.replica != victim.replica
    assert left_at_start == []  # claimed as it started
    assert lost["writes"] == 1, lost
    if released is None:  # the one mark (with tickets, the dead process's ticket taken late marked it first)
        assert [victim.replica in reason for reason in marked] == [True], marked
    else:
        assert (released["key"], released["replica"]) == ("K1", victim.replica), released
