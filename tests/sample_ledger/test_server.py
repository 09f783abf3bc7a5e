"""Starting and stopping the sample ledgers: `serve`, `RunningLedger` and `python -m sample_ledger`."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import grpc
import pytest

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.bank import BankServicer
from sample_ledger.bk import BkServicer
from sample_ledger.server import MAX_MESSAGE_BYTES, serve
from tests.sample_ledger._support import connected, failure


@pytest.mark.parametrize(("kind", "servicer_type"), [("bank", BankServicer), ("bk", BkServicer)])
async def test_serve_starts_the_requested_kind_on_a_free_port(kind: str, servicer_type: type) -> None:
    """serve(kind) listens on a free local port, reports it, and exposes its servicer."""
    running = await serve(kind)
    try:
        assert running.port > 0
        assert running.address == f"127.0.0.1:{running.port}"
        assert isinstance(running.servicer, servicer_type)
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = pb_grpc.LedgerStub(channel)
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1"))
        assert "A1" in running.servicer.book.accounts
    finally:
        await running.stop(grace=1.0)


async def test_serve_on_a_wildcard_host_reports_a_loopback_address() -> None:
    """A server bound to 0.0.0.0 gives 127.0.0.1:PORT as the address to dial."""
    running = await serve("bk", "0.0.0.0:0")
    try:
        assert running.address == f"127.0.0.1:{running.port}"
    finally:
        await running.stop(grace=1.0)


async def test_serve_refuses_an_unknown_kind() -> None:
    """Only "bank" and "bk" can be served."""
    with pytest.raises(ValueError, match="unknown ledger kind"):
        await serve("ledger")


async def test_stopped_server_refuses_calls() -> None:
    """After stop(), calls to the address fail with UNAVAILABLE."""
    running = await serve("bank")
    await running.stop(grace=1.0)
    async with grpc.aio.insecure_channel(running.address) as channel:
        request = pb.GetAccountRequest(account_id="A1")
        error = await failure(pb_grpc.LedgerStub(channel).GetAccount(request, timeout=5))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("kind", ["bank", "bk"])
async def test_messages_up_to_64_mib_are_accepted(kind: str) -> None:
    """A 5 MiB request and answer (above gRPC's 4 MiB default) go through."""
    assert MAX_MESSAGE_BYTES == 64 * 1024 * 1024
    async with connected(kind) as ledger:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        async with grpc.aio.insecure_channel(ledger.running.address, options=options) as channel:
            owner = "x" * (5 * 1024 * 1024)
            request = pb.OpenAccountRequest(account_id="A1", owner_name=owner)
            account = await pb_grpc.LedgerStub(channel).OpenAccount(request)
    assert len(account.owner_name) == len(owner)


@pytest.mark.parametrize("kind", ["bank", "bk"])
async def test_module_runs_a_ledger_until_sigterm(kind: str) -> None:
    """`python -m sample_ledger KIND --listen 127.0.0.1:0` logs its address when ready, exits 0 on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sample_ledger",
        kind,
        "--listen",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
        match = re.search(rf"{kind} ledger listening on (127\.0\.0\.1:\d+)", line)
        assert match, line
        async with grpc.aio.insecure_channel(match.group(1)) as channel:
            account = await pb_grpc.LedgerStub(channel).OpenAccount(pb.OpenAccountRequest(account_id="A1"))
        assert account.account_id == "A1"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
