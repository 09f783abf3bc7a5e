"""One id field reached by two declarations, and an owner read from the answer, through a real shim.

`tw.v1.S` (a FileDescriptorProto built here, no codegen):

    Mint(MintRequest{account}) -> Minted{thing: Thing{id}, account}
    Use(UseRequest{thing_id}) -> Done{note}

Bank mints "T1", "T2", ...; BK mints "901", "902", ... Each side keeps the Use requests it received.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.message import Message
from grpc import aio

from comparators import DescriptorRegistry, Verdict
from comparators.ids import IdKind
from shim.app import Shim
from shim.errors import ConfigError
from shim.testing import CapturingSink, running_shim
from tests.backends import Running, called_method, scripted_server

F = descriptor_pb2.FieldDescriptorProto
MINT, USE = "/tw.v1.S/Mint", "/tw.v1.S/Use"


def _registry() -> DescriptorRegistry:
    file = descriptor_pb2.FileDescriptorProto(name="tw/v1/tw.proto", package="tw.v1", syntax="proto3")

    def add(name: str, *fields: tuple[str, int, Any, str]) -> None:
        message = file.message_type.add(name=name)
        for field_name, number, kind, of in fields:
            fd = message.field.add(name=field_name, number=number, type=kind, label=F.LABEL_OPTIONAL)
            if of:
                fd.type_name = of

    add("Thing", ("id", 1, F.TYPE_STRING, ""))
    add("MintRequest", ("account", 1, F.TYPE_STRING, ""))
    add("Minted", ("thing", 1, F.TYPE_MESSAGE, ".tw.v1.Thing"), ("account", 2, F.TYPE_STRING, ""))
    add("UseRequest", ("thing_id", 1, F.TYPE_STRING, ""))
    add("Done", ("note", 1, F.TYPE_STRING, ""))
    service = file.service.add(name="S")
    service.method.add(name="Mint", input_type=".tw.v1.MintRequest", output_type=".tw.v1.Minted")
    service.method.add(name="Use", input_type=".tw.v1.UseRequest", output_type=".tw.v1.Done")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


REGISTRY = _registry()


def new(name: str, **fields: Any) -> Message:
    return REGISTRY.message_class(f"tw.v1.{name}")(**fields)


@dataclass
class Side:
    """One side's service: it mints its own ids and keeps the Use requests it received."""

    name: str
    running: Running | None = None
    used: list[str] = field(default_factory=list)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def address(self) -> str:
        assert self.running is not None
        return self.running.address

    async def answer(self, requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        raw = [r async for r in requests]
        if called_method() == MINT:
            account = REGISTRY.message_class("tw.v1.MintRequest").FromString(raw[0]).account
            n = next(self._serial)
            minted = f"T{n}" if self.name == "bank" else str(900 + n)
            return [new("Minted", thing=new("Thing", id=minted), account=account).SerializeToString()]
        self.used.append(REGISTRY.message_class("tw.v1.UseRequest").FromString(raw[0]).thing_id)
        return [new("Done", note="used").SerializeToString()]


@pytest.fixture
async def sides() -> AsyncIterator[tuple[Side, Side]]:
    bank, bk = Side("bank"), Side("bk")
    bank.running, bk.running = await scripted_server(bank.answer), await scripted_server(bk.answer)
    try:
        yield bank, bk
    finally:
        await bk.running.stop()
        await bank.running.stop()


@contextlib.asynccontextmanager
async def _shim(bank: Side, bk: Side, kind: IdKind) -> AsyncIterator[tuple[Shim, CapturingSink, aio.Channel]]:
    async with (
        running_shim(bank.address, bk.address, registry=REGISTRY, ids=(kind,), shadow_timeout=10.0) as (
            shim,
            sink,
        ),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield shim, sink, channel


async def _call(channel: aio.Channel, method: str, request: Message) -> None:
    await channel.unary_unary(method)(request.SerializeToString(), timeout=10)


async def test_a_reference_declared_on_its_type_and_on_the_method_path_reaches_bk_translated_once(
    sides: tuple[Side, Side],
) -> None:
    """References `tw.v1.UseRequest.thing_id` and `tw.v1.S/Use:request.thing_id` name one field: the call
    naming T1 reaches BK as 901 and matches (before: the id was found twice, the second time as 901,
    unmapped, so the call was not sent to BK and the comparison was skipped)."""
    bank, bk = sides
    twice = IdKind(
        "thing",
        minted=("tw.v1.Thing.id",),
        references=("tw.v1.UseRequest.thing_id", "tw.v1.S/Use:request.thing_id"),
    )
    async with _shim(bank, bk, twice) as (shim, sink, channel):
        await _call(channel, MINT, new("MintRequest", account="A"))
        await _call(channel, USE, new("UseRequest", thing_id="T1"))
        comparisons = await sink.wait_for(2)
        unmapped = shim.counters.get("ids_unmapped", USE)
    assert (bank.used, bk.used, unmapped) == (["T1"], ["901"], 0)
    (use,) = [c for c in comparisons if c.method == USE]
    assert (use.verdict, use.differences) == (Verdict.MATCH, ())


async def test_a_field_minted_on_its_type_and_referenced_on_a_path_does_not_start(
    sides: tuple[Side, Side],
) -> None:
    """Minted on `tw.v1.Thing.id` and named as a reference at `tw.v1.S/Mint:response.thing.id`: refused at
    start in one line naming both settings."""
    bank, bk = sides
    both = IdKind("thing", minted=("tw.v1.Thing.id",), references=("tw.v1.S/Mint:response.thing.id",))
    with pytest.raises(ConfigError) as caught:
        async with _shim(bank, bk, both):
            pytest.fail("the shim started")
    assert str(caught.value) == (
        "ids.thing.references[0]: 'tw.v1.S/Mint:response.thing.id' reaches tw.v1.Thing.id, which "
        "ids.thing.minted[0] declares: a field of an answer mints ids of its kind or names them, not both"
    )


async def test_a_nested_minted_id_whose_owner_is_an_answer_path_is_learned_with_its_owner(
    sides: tuple[Side, Side],
) -> None:
    """`tw.v1.Thing.id` minted inside Mint's answer, owner `tw.v1.S/Mint:response.account`: the pair
    T1/901 is learned with owner A, and a call naming T1 reaches BK as 901 (before: AttributeError off the
    client's path, so no pair was ever learned and the call was not sent to BK)."""
    bank, bk = sides
    owned = IdKind(
        "thing",
        minted=("tw.v1.Thing.id",),
        references=("tw.v1.UseRequest.thing_id",),
        owner_key=("tw.v1.S/Mint:response.account",),
    )
    async with _shim(bank, bk, owned) as (shim, sink, channel):
        await _call(channel, MINT, new("MintRequest", account="A"))
        await sink.wait_for(1)
        assert shim.ids is not None
        learned = (shim.ids.known("bank", "thing", "T1"), shim.ids.owner("bank", "thing", "T1"))
        await _call(channel, USE, new("UseRequest", thing_id="T1"))
        comparisons = await sink.wait_for(2)
    assert learned == ("901", "A")
    assert (bank.used, bk.used) == (["T1"], ["901"])
    assert all(c.verdict is Verdict.MATCH for c in comparisons)
