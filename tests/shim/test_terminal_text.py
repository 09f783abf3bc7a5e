"""What clients name (methods, keys, values) reaches an operator's terminal as text: never as rich markup,
and with its control characters escaped, through `shim report`, `shim gate`, `shim resync --list` and
`shim reconcile`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

import sample_ledger
from comparators import DescriptorRegistry
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import serve
from shim.routing import MethodSettings
from shim.terminal_text import printable
from shim.testing import running_shim
from tests.backends import called_method, scripted_server
from tests.helpers import run_shim

CONFIG = Path(sample_ledger.__file__).parent / "shim.toml"
REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
KEYED = {"bank.v1.Ledger/OpenAccount": MethodSettings(key=("account_id",))}
MARKUP = "/x.Y/[/b]"  # rich reads "[/b]" as a closing tag with nothing open: a MarkupError
ESCAPES = "/x.Y/\x1b]0;owned\x07\x1b[2J"  # sets the window title, then clears the screen
KEY = "K\x1b[31m[bold]\u202e"  # red, markup, and a right-to-left override


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("bank.v1.Ledger/GetBalance", "bank.v1.Ledger/GetBalance"),
        ("[/b] [red]x[/red]", "[/b] [red]x[/red]"),  # markup is left alone: only rich reads it
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("tab\tnew\nline\r", "tab\\x09new\\x0aline\\x0d"),
        ("\x7f\x9b31m", "\\x7f\\x9b31m"),  # DEL, and the one-byte CSI
        ("\u202eevil\u2028", "\\u202eevil\\u2028"),  # right-to-left override, line separator
        ("\ud800", "\\ud800"),  # a lone surrogate would not even encode
        ("é → 日本 🙂", "é → 日本 🙂"),
    ],
)
def test_printable_escapes_control_characters_only(text: str, shown: str) -> None:
    """Control, format and separator characters are escaped as Python writes them; printable text,
    markup brackets and non-ASCII letters are left as they are."""
    assert printable(text) == shown


_shim = run_shim


def _assert_inert(output: str) -> None:
    """No control character but the commands' own newlines and tabs (nor a right-to-left override)."""
    assert not {"\x1b", "\x07", "\u202e"} & set(output), repr(output)
    assert all(ch.isprintable() or ch in "\n\t" for ch in output), repr(output)


async def test_report_gate_and_resync_print_what_clients_named_as_escaped_text(tmp_path: Path) -> None:
    """Calls to made-up methods named with markup and ESC sequences, and a write on a key holding them,
    are reported, judged and listed with those characters escaped: the commands do not fail, and no
    escape sequence reaches the terminal."""
    bank = await serve("bank")

    async def bk_side(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        """UNIMPLEMENTED to Bank's methods (the write puts its key out of step), an empty answer to the
        made-up ones (both sides refusing them would say nothing of the service: they would not be
        recorded)."""
        if called_method().startswith("/bank."):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no such method")
        return [b""]

    bk = await scripted_server(bk_side)
    db = tmp_path / "shim.db"
    try:
        async with running_shim(
            bank.address, bk.address, registry=REGISTRY, methods=KEYED, store={"url": str(db)}
        ) as (shim, sink):
            async with aio.insecure_channel(shim.address) as channel:
                await pb_grpc.LedgerStub(channel).OpenAccount(  # type: ignore[no-untyped-call]
                    pb.OpenAccountRequest(account_id=KEY, initial_deposit="10")
                )
                for method in (MARKUP, ESCAPES):
                    with pytest.raises(aio.AioRpcError) as caught:
                        await channel.unary_unary(method)(b"", timeout=5)
                    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
            await sink.wait_for(3)
            await shim.drain()
    finally:
        await bk.stop()
        await bank.stop(None)

    report, as_json, gate, resync = await asyncio.gather(
        asyncio.to_thread(_shim, "report", "--store", str(db), "--since", "1h", "--calls"),
        asyncio.to_thread(_shim, "report", "--store", str(db), "--since", "1h", "--calls", "--json"),
        asyncio.to_thread(_shim, "gate", "--store", str(db), "--min-compared", "1"),
        asyncio.to_thread(_shim, "resync", "--store", str(db), "--list"),
    )
    assert (report.returncode, as_json.returncode) == (0, 0), report.stderr + as_json.stderr
    assert (gate.returncode, resync.returncode) == (1, 0), gate.stderr + resync.stderr
    for done in (report, as_json, gate, resync):
        _assert_inert(done.stdout + done.stderr)
    assert "Y/[/b]" in report.stdout  # without its package (the report says so), escaped
    assert "Y/\\x1b]0;owned\\x07\\x1b[2J" in report.stdout
    assert printable(KEY) in report.stdout, "--calls lists the write's key"
    data = json.loads(as_json.stdout)  # the same names, escaped the JSON way
    assert {MARKUP.lstrip("/"), ESCAPES.lstrip("/")} <= {m["method"] for m in data["methods"]}
    assert KEY in {c["routing_key"] for c in data["calls"]}
    assert "x.Y/[/b]" in gate.stdout
    assert "x.Y/\\x1b]0;owned\\x07\\x1b[2J" in gate.stdout
    lines = resync.stdout.splitlines()
    assert any(line.startswith(printable(KEY) + "\tsince ") for line in lines), resync.stdout
    # the made-up methods' writes have no key: they are kept as the mark of no key, their method escaped
    (no_key,) = [line for line in lines if line.startswith("(writes with no key)\tsince ")]
    assert "\tx.Y/" in no_key, no_key


async def test_reconcile_prints_keys_and_values_as_escaped_text(tmp_path: Path) -> None:
    """An account whose id holds markup and ESC sequences, differing between the books, is listed by
    `shim reconcile` with those characters escaped."""
    bank, bk = await serve("bank"), await serve("bk")
    try:
        async with aio.insecure_channel(bank.address) as to_bank, aio.insecure_channel(bk.address) as to_bk:
            for channel, deposit in ((to_bank, "10"), (to_bk, "20")):
                await pb_grpc.LedgerStub(channel).OpenAccount(  # type: ignore[no-untyped-call]
                    pb.OpenAccountRequest(account_id=KEY, initial_deposit=deposit)
                )
        done = await asyncio.to_thread(
            _shim,
            "reconcile",
            "--config",
            str(CONFIG),
            "--bank",
            bank.address,
            "--bk",
            bk.address,
            "--store",
            ":memory:",
        )
    finally:
        await bk.stop(None)
        await bank.stop(None)
    assert done.returncode == 1, done.stdout + done.stderr
    _assert_inert(done.stdout + done.stderr)
    assert printable(KEY) in done.stdout
