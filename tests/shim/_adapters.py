"""Adapters for the seam's tests: bank.v1 methods served from a BK that speaks bank.v1 too.

Each one does one thing a test pins: pass BK's answer on (changed a little, so a test can tell
who answered), raise, answer the wrong type, abort, wait until told, or stream in step with the
client. `Probe` records what they saw.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from shim.adapters import Abort, Backend


@dataclass
class Probe:
    """What the adapters saw, and the events tests release them with."""

    requests: list[Any] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    go_on: asyncio.Event = field(default_factory=asyncio.Event)
    trailing: Any = ()  # what `aborting_with_trailer` aborts with
    headers: Any = ()  # what the adapters `..._with_metadata` send as headers ...
    trailers: Any = ()  # ... and set as trailers
    # for plain `def` adapters, which run in threads of their own
    release: threading.Event = field(default_factory=threading.Event)
    returned: threading.Event = field(default_factory=threading.Event)
    reading: threading.Event = field(default_factory=threading.Event)
    freed: threading.Event = field(default_factory=threading.Event)


PROBE = Probe()


def reset() -> Probe:
    global PROBE
    PROBE = Probe()
    return PROBE


async def balance_plus_one(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """BK's balance with "+1" appended to the currency: whoever sees it knows the adapter answered."""
    PROBE.requests.append(request)
    PROBE.timeouts.append(bk.timeout)
    balance: pb.Balance = await bk.stub(pb_grpc.LedgerStub).GetBalance(request)
    balance.currency += "+1"
    return balance


async def raising(request: Any, bk: Backend) -> pb.Balance:
    raise ValueError("no such rate table")


def wrong_type(request: Any, bk: Backend) -> pb.Account:
    return pb.Account(account_id="not a balance")


async def aborting(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="account_id", description="gone")]
    )
    status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message="account closed")
    status.details.add().Pack(bad)
    raise Abort(grpc.StatusCode.NOT_FOUND, "account closed", status_details=status.SerializeToString())


async def waiting(request: Any, bk: Backend) -> pb.Balance:
    """Waits until released; records its cancellation."""
    PROBE.started.set()
    try:
        await PROBE.go_on.wait()
    except asyncio.CancelledError:
        PROBE.cancelled.set()
        raise
    return pb.Balance(account_id=request.account_id)


async def entries_in_step(
    request: pb.StreamLedgerEntriesRequest, bk: Backend
) -> AsyncIterator[pb.LedgerEntry]:
    """One entry, then a second only once the test says the client has read the first."""
    yield pb.LedgerEntry(sequence=1, account_id=request.account_id)
    await PROBE.go_on.wait()
    yield pb.LedgerEntry(sequence=2, account_id=request.account_id)


async def entries_then_raise(
    request: pb.StreamLedgerEntriesRequest, bk: Backend
) -> AsyncIterator[pb.LedgerEntry]:
    yield pb.LedgerEntry(sequence=1, account_id=request.account_id)
    raise RuntimeError("lost the journal")


async def session_echo(
    requests: AsyncIterator[pb.TradeSessionRequest], bk: Backend
) -> AsyncIterator[pb.TradeSessionEvent]:
    """One rejection per order, as each order arrives."""
    async for request in requests:
        PROBE.requests.append(request)
        rejection = pb.Rejection(client_order_id=request.order.client_order_id, code="ECHO")
        yield pb.TradeSessionEvent(rejected=rejection)


async def count_orders(requests: AsyncIterator[pb.PostTradeRequest], bk: Backend) -> pb.BookTradesSummary:
    booked = 0
    async for _ in requests:
        booked += 1
    return pb.BookTradesSummary(booked=booked)


def two_arguments_wanted(request: Any) -> pb.Balance:
    return pb.Balance()


NOT_CALLABLE = 42
NOT_A_MAPPING = [balance_plus_one]
ADAPTERS = {"bank.v1.Ledger/GetBalance": balance_plus_one}


async def balance_as_is(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """BK's balance, unchanged."""
    balance: pb.Balance = await bk.stub(pb_grpc.LedgerStub).GetBalance(request)
    return balance


async def balance_with_metadata(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """BK's balance, with the headers and trailers the probe holds."""
    bk.send_initial_metadata(PROBE.headers)
    balance: pb.Balance = await bk.stub(pb_grpc.LedgerStub).GetBalance(request)
    bk.set_trailing_metadata(PROBE.trailers)
    return balance


def plain_balance_with_metadata(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """The same, as a plain function (in a thread of its own)."""
    bk.send_initial_metadata(PROBE.headers)
    balance: pb.Balance = bk.stub(pb_grpc.LedgerStub).GetBalance(request)
    bk.set_trailing_metadata(PROBE.trailers)
    return balance


async def entries_then_headers(
    request: pb.StreamLedgerEntriesRequest, bk: Backend
) -> AsyncIterator[pb.LedgerEntry]:
    """Headers sent after the first answer: too late."""
    yield pb.LedgerEntry(sequence=1, account_id=request.account_id)
    bk.send_initial_metadata((("x-late", "1"),))


# -- adapters that misbehave in ways an adapter must never get past the seam (test_adapter_faults) --


async def exiting(request: Any, bk: Backend) -> pb.Balance:
    """What argparse, or a library, does inside an adapter: sys.exit."""
    raise SystemExit(3)


async def interrupted(request: Any, bk: Backend) -> pb.Balance:
    raise KeyboardInterrupt("in the adapter")


async def generator_exit(request: Any, bk: Backend) -> pb.Balance:
    raise GeneratorExit("in the adapter")


async def aborting_ok(request: Any, bk: Backend) -> pb.Balance:
    raise Abort(grpc.StatusCode.OK, "fine")


async def aborting_with_trailer(request: Any, bk: Backend) -> pb.Balance:
    raise Abort(grpc.StatusCode.NOT_FOUND, "account closed", trailing_metadata=PROBE.trailing)


async def aborting_with_details(request: Any, bk: Backend) -> pb.Balance:
    """NOT_FOUND 'account closed', with the rich details the test put in `PROBE.trailing` (bytes)."""
    raise Abort(grpc.StatusCode.NOT_FOUND, "account closed", status_details=PROBE.trailing)


async def deposit_then_balance(request: pb.DepositRequest, bk: Backend) -> pb.Balance:
    """A write on BK, then a read of what it changed, once the test says so (`go_on`): BK may be gone by
    then, with the write applied."""
    stub = bk.stub(pb_grpc.LedgerStub)
    await stub.Deposit(request)
    PROBE.started.set()
    await PROBE.go_on.wait()
    balance: pb.Balance = await stub.GetBalance(pb.GetBalanceRequest(account_id=request.account_id))
    return balance


async def padded_balance(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """BK's balance with a currency of 8 KiB: an answer over a small `max_message_size`."""
    balance: pb.Balance = await bk.stub(pb_grpc.LedgerStub).GetBalance(request)
    balance.currency = "X" * 8192
    return balance


async def padded_deposit(request: pb.DepositRequest, bk: Backend) -> pb.Balance:
    """A deposit BK applies, answered with a currency of 8 KiB."""
    balance: pb.Balance = await bk.stub(pb_grpc.LedgerStub).Deposit(request)
    balance.currency = "X" * 8192
    return balance


async def cancelling_itself(request: Any, bk: Backend) -> pb.Balance:
    """Awaits a sub-task it cancelled itself: the CancelledError is the adapter's, its call goes on."""
    sub = asyncio.ensure_future(asyncio.Event().wait())
    sub.cancel()
    await sub
    return pb.Balance(account_id=request.account_id)


# -- plain `def` adapters: they may block, and call BK from their thread ---------------------------


def blocking(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """Blocks its thread until the test releases it (5 s at most: a blocked event loop cannot be told)."""
    PROBE.release.wait(5)
    PROBE.returned.set()
    return pb.Balance(account_id=request.account_id, currency="USD", cash="100.00")


def plain_balance(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """BK's balance, asked from the adapter's thread: the stub's call gives the answer itself."""
    balance: pb.Balance = bk.stub(pb_grpc.LedgerStub).GetBalance(request)
    balance.currency += "+def"
    return balance


def plain_entries(request: pb.StreamLedgerEntriesRequest, bk: Backend) -> Any:
    """A plain generator: one entry, then a blocking wait, then BK's balance as a second entry."""
    yield pb.LedgerEntry(sequence=1, account_id=request.account_id)
    PROBE.release.wait(5)
    PROBE.returned.set()
    balance = bk.stub(pb_grpc.LedgerStub).GetBalance(pb.GetBalanceRequest(account_id=request.account_id))
    yield pb.LedgerEntry(sequence=2, account_id=balance.account_id, amount=balance.cash)


def plain_count_orders(requests: Any, bk: Backend) -> pb.BookTradesSummary:
    return pb.BookTradesSummary(booked=sum(1 for _ in requests))


def plain_session(requests: Any, bk: Backend) -> Any:
    for request in requests:
        rejection = pb.Rejection(client_order_id=request.order.client_order_id, code="DEF")
        yield pb.TradeSessionEvent(rejected=rejection)


def plain_waiting_on_bk(request: pb.GetBalanceRequest, bk: Backend) -> pb.Balance:
    """Asks BK from its thread (a BK that never answers); records being let go when its call ends."""
    PROBE.reading.set()
    try:
        balance: pb.Balance = bk.stub(pb_grpc.LedgerStub).GetBalance(request)
    except concurrent.futures.CancelledError:
        PROBE.freed.set()
        raise
    return balance
