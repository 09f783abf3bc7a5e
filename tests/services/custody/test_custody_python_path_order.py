"""On Envoy, the calls through the shim's own server keep their clients' order with the copies.

A method with `strict = true` takes Python on its primary path (`shim.dataplane.routes`); the custody's
other methods go from Envoy straight to Bank, their copies to the comparison plane. A client that
opens an account (a copy) and then freezes it (through the shim's own server) must see BK get the two in
that order, as Bank did, even while the copy is still arriving (a large request: here an owner's name of
3 MiB). And a deposit the client makes once the freeze was answered (a copy again) must reach BK after
the freeze, however long the freeze waited for its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from grpc import aio

from comparators import Comparison, Verdict
from shim.config import load_file
from shim.dataplane import EnvoyPlane
from shim.dataplane.processor import Processor
from shim.testing import running_shim
from tests.helpers import NEEDS_ENVOY, until
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.server import serve

HERE = Path(__file__).parent
LARGE = "o" * (3 << 20)  # an owner's name long enough that its copy takes a while to arrive
ROUNDS = 6


def _settings(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    settings = load_file(tmp_path / "shim.toml")
    settings.pop("ordering")  # strict for Freeze alone: the other writes go straight to Bank
    methods = settings["methods"]
    methods["custody.v1.Custody/Freeze"] = replace(methods["custody.v1.Custody/Freeze"], strict=True)
    return settings


def _named(method: str) -> Any:
    def where(c: Comparison) -> bool:
        return c.exchange.method.endswith("/" + method)

    return where


def _plane(shim: Any) -> EnvoyPlane:
    plane = shim.front
    assert isinstance(plane, EnvoyPlane)
    return plane


def _processor(shim: Any) -> Processor:
    processor = _plane(shim).processor
    assert processor is not None
    return processor


def _verdicts(comparisons: list[Comparison]) -> list[tuple[Verdict, str]]:
    return [(c.verdict, c.reason) for c in comparisons]


@NEEDS_ENVOY
async def test_a_call_through_the_shim_follows_the_copy_of_the_call_before_it(tmp_path: Path) -> None:
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    options = [("grpc.max_send_message_length", 8 << 20)]
    try:
        async with (
            running_shim(bank.address, bk.address, dataplane="envoy", **_settings(tmp_path)) as (shim, sink),
            aio.insecure_channel(shim.address, options=options) as channel,
        ):
            assert "/custody.v1.Custody/Freeze" in {r.path for r in _plane(shim).routes if r.why}
            client = Client(channel)
            for i in range(ROUNDS):
                opened = await client.call("OpenAccount", client_ref=f"r{i}", owner=LARGE)
                assert (await client.call("Freeze", account_id=opened.message.account_id)).ok
            freezes = await sink.wait_for(ROUNDS, within=60, where=_named("Freeze"))
    finally:
        await bank.stop()
        await bk.stop()
    assert _verdicts(freezes) == [(Verdict.MATCH, "")] * ROUNDS, "BK's own id, its account frozen"


class _Gate:
    """A TCP relay in front of the shim that passes a client's first `passes` bytes, then holds the rest
    until `opened`: a client whose large request is still on its way."""

    def __init__(self, target: str, passes: int) -> None:
        self._host, port = target.rsplit(":", 1)
        self._port = int(port)
        self._passes = passes
        self.opened = asyncio.Event()
        self.held = asyncio.Event()  # it has passed its bytes and holds the rest
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        back = asyncio.ensure_future(self._pipe(up_reader, writer, None))
        try:
            await self._pipe(reader, up_writer, self._passes)
            await back
        finally:
            back.cancel()
            for each in (writer, up_writer):
                each.close()
                with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                    await each.wait_closed()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, passes: int | None
    ) -> None:
        sent = 0
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(16384):
                if passes is not None and sent + len(chunk) > passes and not self.opened.is_set():
                    writer.write(chunk[: max(passes - sent, 0)])
                    await writer.drain()
                    chunk = chunk[max(passes - sent, 0) :]
                    self.held.set()
                    await self.opened.wait()
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.write_eof()

    async def stop(self) -> None:
        self.opened.set()
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@NEEDS_ENVOY
async def test_a_copy_after_a_call_through_the_shim_follows_it(tmp_path: Path) -> None:
    """Another client's large call is half sent: its copy is received, not placed. A freeze comes (through
    the shim's own server) and waits for it; the deposit sent once the freeze was answered (a copy)
    waits behind the freeze, so BK refuses it as Bank did."""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    options = [("grpc.max_send_message_length", 8 << 20)]
    try:
        async with running_shim(bank.address, bk.address, dataplane="envoy", **_settings(tmp_path)) as (
            shim,
            sink,
        ):
            processor = _processor(shim)
            gate = _Gate(shim.address, passes=1 << 20)
            try:
                async with (
                    aio.insecure_channel(shim.address) as channel,
                    aio.insecure_channel(await gate.start(), options=options) as slow,
                ):
                    client = Client(channel)
                    opened = await client.call("OpenAccount", client_ref="r1", owner="small")
                    account = opened.message.account_id
                    await shim.drain()
                    received = processor.copies
                    large = asyncio.ensure_future(
                        Client(slow).call("OpenAccount", client_ref="x", owner=LARGE)
                    )
                    await gate.held.wait()
                    await until(lambda: processor.copies > received, "the large call's copy under way")
                    assert (await client.call("Freeze", account_id=account)).ok
                    assert processor.turns.waiting == 1, "the freeze waits for the large call's copy"
                    refused = await client.call("Deposit", account_id=account, amount="5.00")
                    assert refused.code == "FAILED_PRECONDITION", "Bank's answer: the account is frozen"
                    await until(lambda: processor.copies >= received + 2, "the deposit's copy in")
                    gate.opened.set()
                    assert (await large).ok
                    deposits = await sink.wait_for(1, within=30, where=_named("Deposit"))
                    freezes = await sink.wait_for(1, within=30, where=_named("Freeze"))
            finally:
                await gate.stop()
    finally:
        await bank.stop()
        await bk.stop()
    assert _verdicts(freezes) == [(Verdict.MATCH, "")]
    assert _verdicts(deposits) == [(Verdict.MATCH, "")], "BK got the freeze before the deposit, as Bank did"
