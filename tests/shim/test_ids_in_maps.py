"""Ids in maps, and ids the primary's field cannot take, through a real shim (Python data plane).

`mp.v1.S` (a FileDescriptorProto built here, no codegen):

    Mint(MintRequest{account}) -> Thing{id, account}
    Use(UseRequest{refs: map<string, string>, things: map<string, Ref{id}>, number: int64}) -> Done{note}

Bank mints "T1", "T2", ...; BK mints "901", "902", ... (BK's ids are numbers written as text). Each side
keeps the requests it received. Before maps were walked, a method path through a map
(`mp.v1.S/Use:request.refs.value`) failed every call of the method with UNKNOWN (AttributeError: 'str'
object has no attribute 'value'), in `bank` mode too, and an id in a map's values declared on the entry
(`mp.v1.UseRequest.RefsEntry.value`) reached BK untranslated.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
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
MINT, USE = "/mp.v1.S/Mint", "/mp.v1.S/Use"


def _registry() -> DescriptorRegistry:
    file = descriptor_pb2.FileDescriptorProto(name="mp/v1/mp.proto", package="mp.v1", syntax="proto3")

    def add(name: str, *fields: tuple[str, int, Any, str]) -> descriptor_pb2.DescriptorProto:
        message = file.message_type.add(name=name)
        for field_name, number, kind, of in fields:
            label = F.LABEL_REPEATED if of.endswith("Entry") else F.LABEL_OPTIONAL
            fd = message.field.add(name=field_name, number=number, type=kind, label=label)
            if of:
                fd.type_name = of
        return message

    add("Thing", ("id", 1, F.TYPE_STRING, ""), ("account", 2, F.TYPE_STRING, ""))
    add("MintRequest", ("account", 1, F.TYPE_STRING, ""))
    add("Done", ("note", 1, F.TYPE_STRING, ""))
    add("Ref", ("id", 1, F.TYPE_STRING, ""))
    use = add(
        "UseRequest",
        ("refs", 1, F.TYPE_MESSAGE, ".mp.v1.UseRequest.RefsEntry"),
        ("things", 2, F.TYPE_MESSAGE, ".mp.v1.UseRequest.ThingsEntry"),
        ("number", 3, F.TYPE_INT64, ""),
    )
    for entry_name, value_type, value_of in (
        ("RefsEntry", F.TYPE_STRING, ""),
        ("ThingsEntry", F.TYPE_MESSAGE, ".mp.v1.Ref"),
    ):
        entry = use.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        value = entry.field.add(name="value", number=2, type=value_type, label=F.LABEL_OPTIONAL)
        if value_of:
            value.type_name = value_of
    service = file.service.add(name="S")
    service.method.add(name="Mint", input_type=".mp.v1.MintRequest", output_type=".mp.v1.Thing")
    service.method.add(name="Use", input_type=".mp.v1.UseRequest", output_type=".mp.v1.Done")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


REGISTRY = _registry()


def new(name: str, **fields: Any) -> Message:
    return REGISTRY.message_class(f"mp.v1.{name}")(**fields)


def thing(*references: str) -> IdKind:
    return IdKind("thing", minted=("mp.v1.Thing.id",), references=references)


THROUGH_MAPS = thing("mp.v1.S/Use:request.refs.value", "mp.v1.S/Use:request.things.value.id")
ON_THE_ENTRY = thing("mp.v1.UseRequest.RefsEntry.value")
IN_A_NUMBER = thing("mp.v1.UseRequest.number")


@dataclass
class Side:
    """One side's service: it mints its own ids and keeps the Use requests it received."""

    name: str
    running: Running | None = None
    used: list[Message] = field(default_factory=list)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def address(self) -> str:
        assert self.running is not None
        return self.running.address

    async def answer(self, requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        raw = [r async for r in requests]
        if called_method() == MINT:
            account = REGISTRY.message_class("mp.v1.MintRequest").FromString(raw[0]).account
            n = next(self._serial)
            minted = f"T{n}" if self.name == "bank" else str(900 + n)
            return [new("Thing", id=minted, account=account).SerializeToString()]
        self.used.append(REGISTRY.message_class("mp.v1.UseRequest").FromString(raw[0]))
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
async def _shim(
    bank: Side, bk: Side, kind: IdKind, **settings: Any
) -> AsyncIterator[tuple[Shim, CapturingSink, aio.Channel]]:
    async with (
        running_shim(
            bank.address, bk.address, registry=REGISTRY, ids=(kind,), shadow_timeout=10.0, **settings
        ) as (
            shim,
            sink,
        ),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield shim, sink, channel


async def _call(channel: aio.Channel, method: str, request: Message) -> Message:
    """The answer (raises the call's AioRpcError, with its code and details, when it fails)."""
    raw = await channel.unary_unary(method)(request.SerializeToString(), timeout=10)
    return new("Thing" if method == MINT else "Done").FromString(raw)


def _use(
    refs: dict[str, str] | None = None, things: dict[str, str] | None = None, number: int = 0
) -> Message:
    request = new("UseRequest", number=number)
    request.refs.update(refs or {})  # type: ignore[attr-defined]
    for key, id_ in (things or {}).items():
        request.things[key].id = id_  # type: ignore[attr-defined]
    return request


def _ids_of(request: Message) -> tuple[dict[str, str], dict[str, str], int]:
    return (
        dict(request.refs),  # type: ignore[attr-defined]
        {k: v.id for k, v in request.things.items()},  # type: ignore[attr-defined]
        request.number,  # type: ignore[attr-defined]
    )


async def _learn_t1(bank: Side, bk: Side, kind: IdKind, store: str) -> None:
    """A shim in `shadow` mode on `store` learns the pair T1 (Bank) <-> 901 (BK), then stops."""
    async with _shim(bank, bk, kind, store={"url": store}) as (shim, sink, channel):
        minted = await _call(channel, MINT, new("MintRequest", account="A"))
        await sink.wait_for(1)
        assert shim.ids is not None
        assert shim.ids.known("bank", "thing", "T1") == "901"
    assert minted.id == "T1"  # type: ignore[attr-defined]


# -- bug 1: a method path through a map -----------------------------------------------------------------


async def test_ids_named_through_maps_by_a_method_path_reach_bk_as_bks_and_the_client_gets_banks_answer(
    sides: tuple[Side, Side],
) -> None:
    """`shadow` mode, references `Use:request.refs.value` and `Use:request.things.value.id`: the call is
    answered (before: UNKNOWN, AttributeError), Bank gets Bank's id, BK its own, and the two match."""
    bank, bk = sides
    async with _shim(bank, bk, THROUGH_MAPS) as (_, sink, channel):
        await _call(channel, MINT, new("MintRequest", account="A"))
        done = await _call(channel, USE, _use(refs={"a": "T1", "z": "never-minted"}, things={"x": "T1"}))
        comparisons = await sink.wait_for(2)
    assert done.note == "used"  # type: ignore[attr-defined]
    assert [_ids_of(r) for r in bank.used] == [({"a": "T1", "z": "never-minted"}, {"x": "T1"}, 0)]
    assert [_ids_of(r) for r in bk.used] == [({"a": "901", "z": "never-minted"}, {"x": "901"}, 0)]
    (use,) = [c for c in comparisons if c.method == USE]
    assert (use.verdict, use.differences) == (Verdict.MATCH, ())


async def test_ids_named_through_maps_reach_bank_as_banks_in_bank_mode(
    sides: tuple[Side, Side], tmp_path: Path
) -> None:
    """`bank` mode: a client naming, through the maps, BK's id it kept from another mode gets Bank's answer,
    and Bank gets its own id (before: every call of the method failed with UNKNOWN)."""
    bank, bk = sides
    store = str(tmp_path / "shim.db")
    await _learn_t1(bank, bk, THROUGH_MAPS, store)
    async with _shim(bank, bk, THROUGH_MAPS, mode="bank", store={"url": store}) as (shim, _, channel):
        done = await _call(channel, USE, _use(refs={"a": "901"}, things={"x": "901", "y": "T1"}))
        translated = shim.counters.get("ids_translated_for_primary", USE)
    assert done.note == "used"  # type: ignore[attr-defined]
    assert [_ids_of(r) for r in bank.used] == [({"a": "T1"}, {"x": "T1", "y": "T1"}, 0)]
    assert bk.used == []
    assert translated == 1


# -- bug 2: a location on a map's entry -------------------------------------------------------------------


async def test_an_id_in_a_map_value_declared_on_the_entry_reaches_bk_translated(
    sides: tuple[Side, Side],
) -> None:
    """`mp.v1.UseRequest.RefsEntry.value`: the map's values are ids (before: accepted, never found, and
    sent to BK as Bank's)."""
    bank, bk = sides
    async with _shim(bank, bk, ON_THE_ENTRY) as (_, sink, channel):
        await _call(channel, MINT, new("MintRequest", account="A"))
        await _call(channel, USE, _use(refs={"a": "T1"}))
        comparisons = await sink.wait_for(2)
    assert [_ids_of(r)[0] for r in bank.used] == [{"a": "T1"}]
    assert [_ids_of(r)[0] for r in bk.used] == [{"a": "901"}]
    assert all(c.verdict is Verdict.MATCH for c in comparisons)


# -- no id translation toward the primary ever fails a call ------------------------------------------------


@pytest.mark.parametrize("mode", ["shadow", "bank"])
async def test_an_id_whose_primary_counterpart_the_field_cannot_hold_reaches_the_primary_as_sent(
    sides: tuple[Side, Side], tmp_path: Path, mode: str
) -> None:
    """A client names, in an integer field, BK's id 901 it kept; its Bank counterpart "T1" is no integer.
    Translation toward the primary cannot write it there: the request reaches Bank as the client sent it,
    as for an id the map does not know, the client gets Bank's answer, and the failure is counted and
    logged (before: the client got UNKNOWN, ValueError: invalid literal for int())."""
    bank, bk = sides
    store = str(tmp_path / "shim.db")
    await _learn_t1(bank, bk, IN_A_NUMBER, store)
    async with _shim(bank, bk, IN_A_NUMBER, mode=mode, store={"url": store}) as (shim, sink, channel):
        try:
            done = await _call(channel, USE, _use(number=901))
        except aio.AioRpcError as exc:
            pytest.fail(f"the client got {exc.code().name}: {exc.details()}")
        if mode == "shadow":
            await sink.wait_for(1)
        errors = shim.counters.get("id_translation_errors", USE)
    assert done.note == "used"  # type: ignore[attr-defined]
    assert [_ids_of(r)[2] for r in bank.used] == [901]
    assert errors == 1


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        pytest.param(
            thing("mp.v1.UseRequest.RefsEntry.key"),
            "ids.thing.references[0]: mp.v1.UseRequest.RefsEntry.key is a map's key: ids are found in a "
            "map's values (mp.v1.UseRequest.RefsEntry.value), not in its keys",
            id="a-map-key",
        ),
        pytest.param(
            thing("mp.v1.S/Use:request.things.id"),
            "ids.thing.references[0]: 'mp.v1.S/Use:request.things.id': no field 'id' on that path "
            "(things is a map: name its values, things.value)",
            id="past-a-map",
        ),
    ],
)
async def test_a_shim_whose_ids_name_a_maps_key_or_step_past_a_map_does_not_start(
    sides: tuple[Side, Side], kind: IdKind, says: str
) -> None:
    """Refused at start, in one line naming the setting; never a failure at call time."""
    bank, bk = sides
    with pytest.raises(ConfigError) as caught:
        async with _shim(bank, bk, kind):
            pytest.fail("the shim started")
    assert str(caught.value) == says
