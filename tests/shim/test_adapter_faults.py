"""Adapters that misbehave: whatever an adapter does, it is an adapter error of its own.

An adapter never takes the shim down, never delays the clients' answers in `shadow` mode, and what it
gets wrong is never a difference blamed on BK: each case below is served once in `shadow` mode (the
client gets Bank's answer) and once in `bk-primary` mode (the client gets INTERNAL naming the adapter),
with the comparison an `adapter-error`, the counter `adapter_errors` at one, and the shim serving the
next call. The adapters are in tests/shim/_adapters.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import status_pb2
from grpc import aio
from grpc_status import rpc_status

from comparators import Comparison, DiffKind, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.shim import _adapters
from tests.shim.test_adapters import BALANCE, HERE, REGISTRY, adapted

MODES = ("shadow", "bk-primary")


@pytest.fixture(autouse=True)
def probe() -> _adapters.Probe:
    return _adapters.reset()


@dataclass
class Served:
    """One GetBalance served with an adapter in front of BK, and what the shim made of it."""

    answer: pb.Balance | None
    error: aio.AioRpcError | None
    comparison: Comparison
    adapter_errors: int
    next_call: pb.Account  # a call after it, on the same shim


async def serve_one(ledgers: tuple[RunningLedger, RunningLedger], adapter: str, mode: str) -> Served:
    bank, bk = ledgers
    methods = adapted(**{BALANCE: adapter})
    async with running_shim(bank.address, bk.address, mode=mode, registry=REGISTRY, methods=methods) as (
        shim,
        sink,
    ):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A1", currency="USD", initial_deposit="100"), timeout=10
            )
            answer, error = None, None
            try:
                answer = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=10)
            except aio.AioRpcError as failed:
                error = failed
            next_call = await stub.GetAccount(pb.GetAccountRequest(account_id="A1"), timeout=10)
        await sink.wait_for(3)
        await shim.drain()
        errors = shim.counters.get("adapter_errors", "/" + BALANCE)
    comparison = next(c for c in sink.comparisons if c.method == "/" + BALANCE)
    return Served(answer, error, comparison, errors, next_call)


def assert_adapter_error(served: Served, mode: str, adapter: str, what: str) -> None:
    """The adapter's fault is an adapter error naming it, in either mode; the shim served on."""
    message = f"adapter {HERE}.{adapter} for {BALANCE} {what}"
    if mode == "shadow":
        assert served.error is None
        assert served.answer is not None
        assert served.answer.cash == "100.00"  # Bank's answer, untouched
    else:
        assert served.error is not None
        assert (served.error.code(), served.error.details()) == (grpc.StatusCode.INTERNAL, message)
    assert served.comparison.verdict is Verdict.ERROR
    assert [(d.kind, d.bk) for d in served.comparison.differences] == [(DiffKind.ADAPTER_ERROR, message)]
    assert served.adapter_errors == 1
    assert served.next_call.account_id == "A1"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("adapter", "what"),
    [
        ("exiting", "raised SystemExit: 3"),
        ("interrupted", "raised KeyboardInterrupt: in the adapter"),
        ("generator_exit", "raised GeneratorExit: in the adapter"),
    ],
)
async def test_an_adapter_that_exits_or_is_interrupted_is_an_adapter_error_and_the_shim_serves_on(
    ledgers: tuple[RunningLedger, RunningLedger], mode: str, adapter: str, what: str
) -> None:
    """SystemExit (sys.exit from argparse or a library), KeyboardInterrupt and GeneratorExit raised in
    an adapter never leave it: they are adapter errors, and the next call is served."""
    served = await serve_one(ledgers, adapter, mode)
    assert_adapter_error(served, mode, adapter, what)


@pytest.mark.parametrize("mode", MODES)
async def test_an_abort_with_ok_is_an_adapter_error(
    ledgers: tuple[RunningLedger, RunningLedger], mode: str
) -> None:
    """`Abort(StatusCode.OK)` is no answer: an adapter error, not an empty OK for the client."""
    served = await serve_one(ledgers, "aborting_ok", mode)
    assert_adapter_error(
        served,
        mode,
        "aborting_ok",
        "aborted with OK: an Abort needs an error code (return the answer instead)",
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("trailing", "what"),
    [
        pytest.param(
            (("Bad Key", "v"),),
            "key 'Bad Key': keys are lowercase ASCII letters, digits, '-', '_' and '.'",
            id="uppercase-and-space",
        ),
        pytest.param(
            (("clé", "v"),),
            "key 'clé': keys are lowercase ASCII letters, digits, '-', '_' and '.'",
            id="non-ascii",
        ),
        pytest.param(
            (("x-detail-bin", "text"),),
            "'x-detail-bin' ends in -bin: its value must be bytes, not str",
            id="str-for-bin",
        ),
        pytest.param(
            (("x-note", b"\x00raw"),),
            "'x-note' is a text key: its value must be str, not bytes (binary values need a -bin key)",
            id="bytes-for-text",
        ),
        pytest.param(
            (("x-note", "a\tb"),),
            "the value of 'x-note' is not printable ASCII: 'a\\tb'",
            id="control-character",
        ),
        pytest.param((("x-note", 7),), "the value of 'x-note' is int, not str", id="not-a-string"),
        pytest.param((("x-note",),), "('x-note',) is not a (key, value) pair", id="not-a-pair"),
        pytest.param((("grpc-timeout", "1S"),), "key 'grpc-timeout' is gRPC's own", id="grpc-reserved"),
        pytest.param(
            (("content-type", "text/plain"),), "key 'content-type' is gRPC's own", id="http2-reserved"
        ),
    ],
)
async def test_an_abort_with_invalid_trailing_metadata_is_an_adapter_error_naming_what_was_wrong(
    ledgers: tuple[RunningLedger, RunningLedger],
    probe: _adapters.Probe,
    mode: str,
    trailing: tuple[object, ...],
    what: str,
) -> None:
    """Trailers gRPC cannot send (it answers a bare INTERNAL 'Invalid metadata', hangs the call on text
    under a -bin key, aborts the process on grpc-timeout) are the adapter's error, named, not its
    NOT_FOUND blamed on BK."""
    probe.trailing = trailing
    served = await serve_one(ledgers, "aborting_with_trailer", mode)
    assert_adapter_error(
        served, mode, "aborting_with_trailer", f"aborted with invalid trailing metadata: {what}"
    )


async def test_an_abort_with_valid_trailing_metadata_reaches_the_client_as_it_was_given(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """The checks refuse only what gRPC cannot send: text and binary trailers reach the client."""
    probe.trailing = (("x-reason", "closed by the owner"), ("x-trace-bin", b"\x00\xff"), ("x.y_z-1", ""))
    served = await serve_one(ledgers, "aborting_with_trailer", "bk-primary")
    assert served.error is not None
    assert (served.error.code(), served.error.details()) == (grpc.StatusCode.NOT_FOUND, "account closed")
    assert [m for m in served.error.trailing_metadata() or () if m[0] != "grpc-status-details-bin"] == list(
        probe.trailing
    )
    assert served.adapter_errors == 0


def _status(code: grpc.StatusCode, message: str) -> bytes:
    return status_pb2.Status(code=code.value[0], message=message).SerializeToString()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("details", "what"),
    [
        pytest.param(
            _status(grpc.StatusCode.INVALID_ARGUMENT, "account closed"),
            "its google.rpc.Status has code INVALID_ARGUMENT, not the Abort's NOT_FOUND",
            id="another-code",
        ),
        pytest.param(
            _status(grpc.StatusCode.NOT_FOUND, "bad account"),
            "its google.rpc.Status has message 'bad account', not the Abort's details 'account closed'",
            id="another-message",
        ),
        pytest.param(
            b"\xff\xff not a status",
            "they are not a serialized google.rpc.Status",
            id="not-a-status",
        ),
    ],
)
async def test_an_abort_whose_status_details_the_client_cannot_read_is_an_adapter_error(
    ledgers: tuple[RunningLedger, RunningLedger],
    probe: _adapters.Probe,
    mode: str,
    details: bytes,
    what: str,
) -> None:
    """`status_details` the client's `rpc_status.from_call` would refuse (not a google.rpc.Status, or
    one whose code or message is not the Abort's) are the adapter's error, named, not a NOT_FOUND whose
    details fail in the client."""
    probe.trailing = details
    served = await serve_one(ledgers, "aborting_with_details", mode)
    assert_adapter_error(
        served, mode, "aborting_with_details", f"aborted with invalid status_details: {what}"
    )


async def test_an_abort_whose_status_details_match_it_reaches_the_client_readable(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """Details whose code and message are the Abort's reach the client, and `rpc_status` reads them."""
    probe.trailing = _status(grpc.StatusCode.NOT_FOUND, "account closed")
    served = await serve_one(ledgers, "aborting_with_details", "bk-primary")
    assert served.error is not None
    status = rpc_status.from_call(served.error)
    assert status is not None
    assert (status.code, status.message) == (grpc.StatusCode.NOT_FOUND.value[0], "account closed")
    assert served.adapter_errors == 0


@pytest.mark.parametrize("mode", MODES)
async def test_an_adapter_raising_cancelled_error_itself_is_an_adapter_error(
    ledgers: tuple[RunningLedger, RunningLedger], mode: str
) -> None:
    """A CancelledError the adapter raised of its own (awaiting a sub-task it cancelled), while its call
    went on, is its error: not a CANCELLED answer, not a difference blamed on BK."""
    served = await serve_one(ledgers, "cancelling_itself", mode)
    assert_adapter_error(
        served, mode, "cancelling_itself", "raised CancelledError, though its call was not cancelled"
    )


async def test_a_shadow_call_the_shim_gives_up_on_cancels_its_adapter_and_is_no_adapter_error(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """shadow: an adapter still working when the shadow timeout passes is cancelled; that is the shim
    giving up on BK's side (a shadow timeout), not the adapter's error."""
    bank, bk = ledgers
    methods = adapted(**{BALANCE: "waiting"})
    async with running_shim(
        bank.address, bk.address, registry=REGISTRY, methods=methods, shadow_timeout=0.2
    ) as (shim, sink):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A1", currency="USD", initial_deposit="1")
            )
            answer = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=10)
        await asyncio.wait_for(probe.cancelled.wait(), 10)
        await sink.wait_for(2)
        await shim.drain()
        errors = shim.counters.get("adapter_errors", "/" + BALANCE)
    comparison = next(c for c in sink.comparisons if c.method == "/" + BALANCE)
    assert answer.cash == "1.00"
    assert errors == 0
    assert all(d.kind is not DiffKind.ADAPTER_ERROR for d in comparison.differences)
    assert "timeout" in comparison.reason


async def test_a_client_that_cancels_an_adapted_call_is_no_adapter_error(
    ledgers: tuple[RunningLedger, RunningLedger], probe: _adapters.Probe
) -> None:
    """bk-primary: the client's cancel reaches the adapter, and the adapter is not blamed for it."""
    bank, bk = ledgers
    methods = adapted(**{BALANCE: "waiting"})
    async with running_shim(
        bank.address, bk.address, mode="bk-primary", registry=REGISTRY, methods=methods
    ) as (shim, _):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            call = stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
            await asyncio.wait_for(probe.started.wait(), 10)
            call.cancel()
            await asyncio.wait_for(probe.cancelled.wait(), 10)
        await shim.drain()
        errors = shim.counters.get("adapter_errors", "/" + BALANCE)
    assert errors == 0


@pytest.mark.parametrize("mode", MODES)
async def test_an_adapted_call_that_sends_no_headers_differs_where_bank_sends_some(mode: str) -> None:
    """Bank answers with initial metadata; the adapted call (which sends none of its own) has none. In
    shadow mode the client gets Bank's headers, in bk-primary mode (the adapter answering) none: what the
    clients will find after the cutover, so the comparison shows it, a removed key of the metadata."""

    async def bank(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        async for _ in requests:
            pass
        await context.send_initial_metadata((("x-bank-build", "42"),))
        return [pb.Balance(account_id="A1", currency="USD").SerializeToString()]

    async def bk(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        async for _ in requests:
            pass
        return [pb.Balance(account_id="A1", currency="USD").SerializeToString()]

    bank_server, bk_server = await scripted_server(bank), await scripted_server(bk)
    try:
        methods = adapted(**{BALANCE: "balance_as_is"})
        async with running_shim(
            f"127.0.0.1:{bank_server.port}",
            f"127.0.0.1:{bk_server.port}",
            mode=mode,
            registry=REGISTRY,
            methods=methods,
        ) as (shim, sink):
            async with aio.insecure_channel(shim.address) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                call = stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=10)
                balance = await call
                headers = dict(await call.initial_metadata() or ())
            await sink.wait_for(1)
    finally:
        await bk_server.stop()
        await bank_server.stop()
    assert balance.currency == "USD"
    assert headers.get("x-bank-build") == ("42" if mode == "shadow" else None)
    (comparison,) = sink.comparisons
    assert comparison.verdict is Verdict.MISMATCH
    assert [(d.path, d.kind, d.bank, d.bk) for d in comparison.differences] == [
        ("metadata.x-bank-build", DiffKind.REMOVED, "42", None)
    ]
