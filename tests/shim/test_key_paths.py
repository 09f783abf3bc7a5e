"""Routing keys read end to end: a key on a map's entries, a key in a oneof the request leaves unset, and a
key that cannot be read (a bug in reading it), which never changes a client's answer (docs/ordering.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio

from comparators import Verdict
from shim import routing
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.comparators._odd import REGISTRY, Odd
from tests.helpers import PLANES

GET = "/odd.v1.Odds/Get"


async def _echo(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
    return [b"".join([r async for r in requests])]


async def _three_writes(plane: str, strict: bool, key: str) -> tuple[Any, list[Any]]:
    """Three writes of odd.v1.Odds/Get keyed on `key`, each answered as Bank answers it: (the shim, the
    comparisons)."""
    bank, bk = await scripted_server(_echo), await scripted_server(_echo)
    try:
        async with running_shim(
            bank.address,
            bk.address,
            dataplane=plane,
            registry=REGISTRY,
            methods={GET.lstrip("/"): MethodSettings(key=(key,), read=False, strict=strict)},
        ) as (shim, sink):
            async with aio.insecure_channel(shim.address) as channel:
                call = channel.unary_unary(GET)
                for n in range(3):
                    odd = Odd(count=n)
                    odd.tags["acct-1"] = "x"
                    assert await call(odd.SerializeToString(), timeout=5) == odd.SerializeToString()
            comparisons = await sink.wait_for(3, within=10)
    finally:
        await bank.stop()
        await bk.stop()
    return shim, comparisons


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("plane", PLANES)
async def test_writes_keyed_on_a_maps_entries_are_mirrored_and_compared(plane: str, strict: bool) -> None:
    """Before, `tags.key` was accepted at start and raised at every call: no write reached BK, and with
    `strict` the client got UNKNOWN instead of Bank's answer."""
    shim, comparisons = await _three_writes(plane, strict, "tags.key")
    assert [c.verdict for c in comparisons] == [Verdict.MATCH] * 3
    assert {c.exchange.routing_key for c in comparisons} == {"acct-1"}
    assert shim.counters.get("keys_not_read") == 0


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("plane", PLANES)
async def test_a_key_that_cannot_be_read_never_changes_an_answer(
    plane: str, strict: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong reading a call's keys, the client gets Bank's answer and the call is mirrored and
    compared, ordered as one without a key (counted)."""

    def broken(msg: object, parts: list[str]) -> list[str]:
        raise RuntimeError("a bug in reading keys")

    monkeypatch.setattr(routing, "_values", broken)
    shim, comparisons = await _three_writes(plane, strict, "count")
    assert [c.verdict for c in comparisons] == [Verdict.MATCH] * 3
    assert {c.exchange.routing_key for c in comparisons} == {""}
    assert shim.counters.get("keys_not_read", GET) >= 3


async def test_a_write_whose_key_is_unset_in_its_oneof_waits_for_the_earlier_writes() -> None:
    """A number key in a oneof the request leaves unset is no key: the write is ordered as one without a
    key, after every earlier write. Before, it was on the key "0" and overtook a write on key 7 on BK."""
    bank_log: list[str] = []
    bk_log: list[str] = []

    def ledger(log: list[str], slow: bool) -> Any:
        async def apply(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
            odd = Odd.FromString(b"".join([r async for r in requests]))
            if slow and odd.WhichOneof("pick") == "num":
                await asyncio.sleep(0.3)  # BK takes its time over the first write
            log.append(odd.WhichOneof("pick"))
            return [odd.SerializeToString()]

        return apply

    bank, bk = await scripted_server(ledger(bank_log, False)), await scripted_server(ledger(bk_log, True))
    try:
        async with running_shim(
            bank.address,
            bk.address,
            registry=REGISTRY,
            methods={GET.lstrip("/"): MethodSettings(key=("num",), read=False)},
        ) as (shim, sink):
            async with aio.insecure_channel(shim.address) as channel:
                call = channel.unary_unary(GET)
                await call(Odd(num=7).SerializeToString(), timeout=5)
                await call(Odd(text="account 7 by its name").SerializeToString(), timeout=5)
            comparisons = await sink.wait_for(2, within=10)
    finally:
        await bank.stop()
        await bk.stop()
    assert [c.exchange.routing_key for c in comparisons] == ["7", ""]
    assert bank_log == ["num", "text"]
    assert bk_log == bank_log
