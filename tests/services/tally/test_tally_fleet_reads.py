"""Reads across replicas (`ordering.across_replicas`, docs/fleet-order.md): two `shim serve` replicas on
one PostgreSQL store, in front of one Bank and one BK (the tally). A client appends twice to a key through
replica A, and BK answers the first append slowly, so A's lanes still hold the second when the client,
having both answers, lists the key through replica B on a fresh connection.

The promise checked: B's copy of the read reaches BK after both appends, so BK lists what Bank listed and
the comparison is a match. With SHIM_TEST_ACROSS_REPLICAS=false the same test fails: B mirrors the read at
once, BK lists one entry, and the read is reported a real mismatch that only the order made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import psycopg
import pytest
from grpc import aio

from tests.helpers import NEEDS_ENVOY, NEEDS_POSTGRES, POSTGRES_DSN, postgres_schema_url, until
from tests.processes import shim_process
from tests.services.tally.server import (
    APPEND,
    DESCRIPTOR_SET,
    LIST,
    ListReply,
    ListRequest,
    Reply,
    Request,
    serve,
)

ACROSS = os.environ.get("SHIM_TEST_ACROSS_REPLICAS", "true")
KEYS = 4
HOLD_MS = 400  # BK's time to answer each key's first append: A's lanes hold the second that long
# each write's ticket is back before Bank's answer (a ticket later than that marks its key), also on a
# loaded machine: 20 ms (as in test_tally_fleet.py) was not always enough beside other tests in CI
BANK_TIME = 0.1

CONFIG = """
mode = "shadow"
descriptor_sets = ["tally.binpb"]

[methods."tally.v1.Tally/Append"]
key = ["key"]

[methods."tally.v1.Tally/List"]
key = ["key"]
read = true

[ordering]
across_replicas = {across}

[envoy]
comparison_nice = 0  # the tickets are taken in the comparison plane: not starved by the tests beside it

[shadow]
shed_lag = "0s"  # every read is mirrored, however loaded the machine: the test is about their order
"""


async def _append(address: str, key: str, entry: str, delay_ms: int) -> None:
    async with aio.insecure_channel(address) as channel:  # a fresh channel: a new connection
        answer = await channel.unary_unary(APPEND)(
            Request(key=key, entry=entry, delay_ms=delay_ms).SerializeToString(), timeout=10
        )
    assert Reply.FromString(answer).place > 0


async def _lists_compared(url: str) -> list[tuple[str, str]]:
    """The List's comparison in the store at `url` (verdict, reason), once there is one."""
    with psycopg.connect(url, autocommit=True) as conn:

        def reads() -> list[tuple[str, str]]:
            query = b"SELECT verdict, reason FROM comparisons WHERE method = %s"
            rows = conn.execute(query, (LIST,)).fetchall()
            return [(str(v), str(r)) for v, r in rows]

        await until(lambda: len(reads()) >= 1, "the read compared", 30)
        return reads()


async def _list(address: str, key: str) -> list[str]:
    async with aio.insecure_channel(address) as channel:
        answer = await channel.unary_unary(LIST)(ListRequest(key=key).SerializeToString(), timeout=10)
    return list(ListReply.FromString(answer).entries)


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_read_through_another_replica_reaches_bk_after_the_writes_answered_before_it(
    tmp_path: Path, dataplane: str
) -> None:
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    config.write_text(CONFIG.format(across=ACROSS), encoding="utf-8")
    bank, bk = await serve(answer_after=BANK_TIME), await serve(slow=True)
    try:
        with postgres_schema_url() as url:
            flags = ["--config", config, "--dataplane", dataplane, "--listen", "127.0.0.1:0"]
            flags += ["--bank", bank.address, "--bk", bk.address, "--store", url, "--diff-log", "/dev/null"]
            async with contextlib.AsyncExitStack() as stack:
                a = await stack.enter_async_context(shim_process(*flags))
                b = await stack.enter_async_context(shim_process(*flags))
                listed = {}
                for n in range(KEYS):
                    key = f"k{n}"
                    await _append(a.ready["listen"], key, "first", HOLD_MS)
                    await _append(a.ready["listen"], key, "second", 0)
                    listed[key] = await _list(b.ready["listen"], key)
                with psycopg.connect(url, autocommit=True) as conn:

                    def reads() -> list[tuple[str, str, str]]:
                        rows = conn.execute(
                            b"SELECT routing_key, verdict, reason FROM comparisons WHERE method = %s"
                            b" ORDER BY routing_key",
                            (LIST,),
                        ).fetchall()
                        return [(str(k), str(v), str(r)) for k, v, r in rows]

                    await until(lambda: len(reads()) >= KEYS, "every read compared", 30)
                    marked = conn.execute(b"SELECT key, reason FROM out_of_step").fetchall()
                    compared = reads()
    finally:
        await bank.stop()
        await bk.stop()
    assert listed == {f"k{n}": ["first", "second"] for n in range(KEYS)}  # Bank's answers, untouched
    assert marked == [], marked
    assert compared == [(f"k{n}", "match", "") for n in range(KEYS)], compared


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_read_racing_a_write_through_another_replica_is_tainted_not_real(
    tmp_path: Path, dataplane: str
) -> None:
    """Bank answers a List slowly, with the entries it has as it answers. While a List is at Bank through
    replica A, an Append on its key goes through replica B and is answered first: Bank's List shows it.
    The List's place among the key's writes came before the Append's ticket, so its copy reached BK
    before the Append's, and BK lists one entry. That difference comes of the race, which no replica
    saw whole: it is `tainted`, naming it, not a real mismatch blamed on BK."""
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    config.write_text(CONFIG.format(across="true"), encoding="utf-8")
    bank, bk = await serve(answer_after=BANK_TIME, list_after=1.0), await serve()
    try:
        with postgres_schema_url() as url:
            flags = ["--config", config, "--dataplane", dataplane, "--listen", "127.0.0.1:0"]
            flags += ["--bank", bank.address, "--bk", bk.address, "--store", url, "--diff-log", "/dev/null"]
            async with contextlib.AsyncExitStack() as stack:
                a = await stack.enter_async_context(shim_process(*flags))
                b = await stack.enter_async_context(shim_process(*flags))
                await _append(a.ready["listen"], "k", "first", 0)
                assert bank.handler is not None
                listing = asyncio.ensure_future(_list(a.ready["listen"], "k"))
                await until(
                    lambda: bank.handler is not None and bank.handler.lists_started == 1, "List at Bank"
                )
                await _append(b.ready["listen"], "k", "second", 0)
                listed = await listing
                compared = await _lists_compared(url)
    finally:
        await bank.stop()
        await bk.stop()
    assert listed == ["first", "second"]  # Bank's answer, untouched
    assert bk.received["k"] == ["first", "second"]  # both appends reached BK
    assert len(compared) == 1
    verdict, reason = compared[0]
    assert verdict == "tainted", compared
    assert "through another replica" in reason, reason


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_read_differing_for_real_stays_real_when_a_write_through_another_replica_follows_its_answer(
    tmp_path: Path, dataplane: str
) -> None:
    """BK misses an entry Bank has (written to Bank alone, before the run): a List shows it, a real
    difference. An Append on the key through the other replica, sent once the List was answered, took its
    ticket after the List's place but started after its answer: no race, and the difference stays real."""
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    config.write_text(CONFIG.format(across="true"), encoding="utf-8")
    # the List's place is back before Bank's answer (else it is tainted as placed late)
    bank, bk = await serve(answer_after=BANK_TIME, list_after=BANK_TIME), await serve()
    try:
        await _append(bank.address, "k", "before the run", 0)  # Bank's alone
        with postgres_schema_url() as url:
            flags = ["--config", config, "--dataplane", dataplane, "--listen", "127.0.0.1:0"]
            flags += ["--bank", bank.address, "--bk", bk.address, "--store", url, "--diff-log", "/dev/null"]
            async with contextlib.AsyncExitStack() as stack:
                a = await stack.enter_async_context(shim_process(*flags))
                b = await stack.enter_async_context(shim_process(*flags))
                await _append(a.ready["listen"], "k", "first", 0)
                listed = await _list(a.ready["listen"], "k")
                await _append(b.ready["listen"], "k", "second", 0)
                compared = await _lists_compared(url)
    finally:
        await bank.stop()
        await bk.stop()
    assert listed == ["before the run", "first"]
    assert compared == [("mismatch", "")], compared
