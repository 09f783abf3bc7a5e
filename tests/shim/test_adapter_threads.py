"""Plain `def` adapters run off the event loop: one that blocks never holds back the clients' answers.

The adapters are in tests/shim/_adapters.py; each blocks on a threading.Event the test sets (5 s at most,
so that the old behaviour, an adapter blocking the event loop, fails the test instead of hanging it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import DiffKind
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.shim import _adapters
from tests.shim.test_adapters import BALANCE, BOOK, ENTRIES, REGISTRY, SESSION, adapted


@pytest.fixture(autouse=True)
def probe() -> _adapters.Probe:
    return _adapters.reset()


async def test_a_blocking_plain_def_adapter_never_delays_the_clients_answers_in_shadow_mode(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """shadow: three GetBalance calls whose adapter blocks its thread, and a GetAccount, all get Bank's
    answers while the adapters are still blocked; released, the adapters' answers are compared."""
    bank, bk = ledgers
    methods = adapted(**{BALANCE: "blocking"})
    async with running_shim(bank.address, bk.address, registry=REGISTRY, methods=methods) as (shim, sink):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A1", currency="USD", initial_deposit="100")
            )
            *balances, account = await asyncio.gather(
                *(stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=30) for _ in range(3)),
                stub.GetAccount(pb.GetAccountRequest(account_id="A1"), timeout=30),
            )
            blocked_while_answered = not probe.returned.is_set()
            probe.release.set()
        await sink.wait_for(5)
        await shim.drain()
        errors = shim.counters.get("adapter_errors", "/" + BALANCE)
    assert blocked_while_answered
    assert [b.cash for b in balances] == ["100.00"] * 3
    assert account.account_id == "A1"
    compared = [c for c in sink.comparisons if c.method == "/" + BALANCE]
    assert len(compared) == 3
    assert errors == 0
    assert all(d.kind is not DiffKind.ADAPTER_ERROR for c in compared for d in c.differences)
    assert all(d.path != "status.code" for c in compared for d in c.differences)  # answered, not given up


async def test_plain_def_adapters_call_bk_and_stream_from_their_threads(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """bk-primary: a plain function's BK call gives the answer itself; a plain generator's first answer
    reaches the client while it blocks for its second; a client stream's requests are a plain iterator;
    a session answers each request as it comes; BK's error in the thread reaches the client as BK sent it."""
    bank, bk = ledgers
    methods = adapted(
        **{
            BALANCE: "plain_balance",
            ENTRIES: "plain_entries",
            BOOK: "plain_count_orders",
            SESSION: "plain_session",
        }
    )
    async with running_shim(
        bank.address, bk.address, mode="bk-primary", registry=REGISTRY, methods=methods
    ) as (shim, _):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A1", currency="USD", initial_deposit="7")
            )
            balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=30)
            with pytest.raises(aio.AioRpcError) as refused:  # BK's own error, raised in the thread
                await stub.GetBalance(pb.GetBalanceRequest(account_id="nobody"), timeout=30)
            entries = stub.StreamLedgerEntries(pb.StreamLedgerEntriesRequest(account_id="A1"), timeout=30)
            first = await entries.read()
            blocked_while_read = not probe.returned.is_set()
            probe.release.set()
            second = await entries.read()
            assert await entries.read() is aio.EOF
            summary = await stub.BookTrades(iter([pb.PostTradeRequest(account_id="A1")] * 3), timeout=30)
            session = stub.TradeSession(timeout=30)
            events = []
            for n in range(3):
                order = pb.PostTradeRequest(account_id="A1", client_order_id=f"o{n}")
                await session.write(pb.TradeSessionRequest(order=order))
                events.append(await session.read())  # answered before the next order is written
            await session.done_writing()
            assert await session.read() is aio.EOF
        errors = sum(shim.counters.get("adapter_errors", "/" + m) for m in (BALANCE, ENTRIES, BOOK, SESSION))
    assert (balance.currency, balance.cash) == ("USD+def", "7")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # as the sample BK refuses it
    assert blocked_while_read
    assert (first.sequence, second.sequence, second.amount) == (1, 2, "7")
    assert summary.booked == 3
    assert [e.rejected.client_order_id for e in events] == ["o0", "o1", "o2"]
    assert errors == 0


async def test_a_cancelled_call_lets_its_plain_adapters_thread_go() -> None:
    """bk-primary: a plain adapter waiting in its thread for a BK that never answers is let go when the
    client cancels (what its thread waits for is cancelled), so the thread serves other calls again."""
    probe = _adapters.PROBE

    async def bank_answers(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        async for _ in requests:
            pass
        return [pb.Balance(account_id="A1").SerializeToString()]

    async def bk_never_answers(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        await asyncio.Event().wait()
        return []

    bank = await scripted_server(bank_answers)
    bk = await scripted_server(bk_never_answers)
    try:
        methods = adapted(**{BALANCE: "plain_waiting_on_bk"})
        async with running_shim(
            f"127.0.0.1:{bank.port}",
            f"127.0.0.1:{bk.port}",
            mode="bk-primary",
            registry=REGISTRY,
            methods=methods,
        ) as (shim, _):
            async with aio.insecure_channel(shim.address) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                call = stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=30)
                assert await asyncio.to_thread(probe.reading.wait, 10)
                call.cancel()
                freed = await asyncio.to_thread(probe.freed.wait, 10)
            errors = shim.counters.get("adapter_errors", "/" + BALANCE)
    finally:
        await bk.stop()
        await bank.stop()
    assert freed
    assert errors == 0
