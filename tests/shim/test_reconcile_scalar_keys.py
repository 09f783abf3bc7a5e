"""A listing whose items are the keys themselves (`repeated string ids`, no message around each):
`[reconcile]` names `items` and no `key`, and the sweep reads each item as a key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from grpc import aio

from comparators import DescriptorRegistry, DiffKind, RuleSet
from comparators.ids import Found, IdFields, IdKind
from comparators.message_api import parse as parse_message
from comparators.message_api import serialize
from shim.errors import ConfigError
from shim.ids import IdBook
from shim.metrics import Counters
from shim.reconcile import Result, Sweep, check, parse
from tests.backends import called_method, scripted_server

F = descriptor_pb2.FieldDescriptorProto


def _registry() -> DescriptorRegistry:
    """ks.v1.Keys: List(ListReq{}) -> ListResp{ids: [string], counts: [int64], rows: [Row{id}]},
    Get(GetReq{id}) -> GetResp{id, value}."""
    file = descriptor_pb2.FileDescriptorProto(name="ks.proto", package="ks.v1", syntax="proto3")
    shapes: dict[str, list[tuple[str, Any, str, bool]]] = {  # name, type, message type, repeated
        "ListReq": [],
        "Row": [("id", F.TYPE_STRING, "", False)],
        "ListResp": [
            ("ids", F.TYPE_STRING, "", True),
            ("counts", F.TYPE_INT64, "", True),
            ("rows", F.TYPE_MESSAGE, "Row", True),
        ],
        "GetReq": [("id", F.TYPE_STRING, "", False)],
        "GetResp": [("id", F.TYPE_STRING, "", False), ("value", F.TYPE_STRING, "", False)],
    }
    for name, fields in shapes.items():
        message = file.message_type.add(name=name)
        for number, (field, kind, of, repeated) in enumerate(fields, start=1):
            fd = message.field.add(name=field, number=number, type=kind)
            fd.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if of:
                fd.type_name = f".ks.v1.{of}"
    service = file.service.add(name="Keys")
    service.method.add(name="List", input_type=".ks.v1.ListReq", output_type=".ks.v1.ListResp")
    service.method.add(name="Get", input_type=".ks.v1.GetReq", output_type=".ks.v1.GetResp")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


REGISTRY = _registry()
TABLE: dict[str, Any] = {
    "list": "ks.v1.Keys/List",
    "items": "ids",
    "reads": [{"method": "ks.v1.Keys/Get", "key": "id"}],
}


def _side(keys: Sequence[str], values: dict[str, str]) -> object:
    """A side listing `keys` as plain strings and answering Get with the key's value ("v" by default)."""

    async def behaviour(requests: AsyncIterator[bytes], context: object) -> list[bytes]:
        raw = await anext(requests)
        if called_method() == "/ks.v1.Keys/List":
            answer = REGISTRY.message_class("ks.v1.ListResp")(ids=list(keys))
        else:
            request = REGISTRY.message_class("ks.v1.GetReq")()
            parse_message(request, raw)
            answer = REGISTRY.message_class("ks.v1.GetResp")(id=request.id, value=values.get(request.id, "v"))
        return [serialize(answer)]

    return behaviour


async def _sweep(table: dict[str, Any], bank: object, bk: object) -> Result:
    settings = parse(table)
    check(settings, REGISTRY)
    bank_server = await scripted_server(bank)  # type: ignore[arg-type]
    bk_server = await scripted_server(bk)  # type: ignore[arg-type]
    try:
        async with (
            aio.insecure_channel(bank_server.address) as to_bank,
            aio.insecure_channel(bk_server.address) as to_bk,
        ):
            return await Sweep(settings, REGISTRY, RuleSet(), to_bank, to_bk, timeout=10).run()
    finally:
        await bank_server.stop()
        await bk_server.stop()


async def test_a_listing_of_plain_strings_is_read_as_the_keys() -> None:
    """Both sides list K1 and K2 and agree on them; Bank alone lists K3, BK alone K4, and K2's value
    differs: each is reported, the listed-once keys by the item they are."""
    result = await _sweep(TABLE, _side(["K1", "K2", "K3"], {}), _side(["K1", "K2", "K4"], {"K2": "other"}))
    assert result.keys == 4
    differing = {r.key: r for r in result.differing}
    assert sorted(differing) == ["K2", "K3", "K4"]
    [(_, only_bank)] = differing["K3"].differences
    assert (only_bank.path, only_bank.kind, only_bank.bank) == ("ids[K3]", DiffKind.REMOVED, "K3")
    [(_, only_bk)] = differing["K4"].differences
    assert (only_bk.path, only_bk.kind, only_bk.bk) == ("ids[K4]", DiffKind.ADDED, "K4")
    [(method, value)] = differing["K2"].differences
    assert (method, value.path) == ("ks.v1.Keys/Get", "value")
    assert result.unreadable == []


def test_a_listing_of_numbers_is_read_as_the_keys_too() -> None:
    check(parse({**TABLE, "items": "counts"}), REGISTRY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"key": "id"},
            "reconcile.key: ks.v1.ListResp.ids holds the keys themselves (string): leave key out",
        ),
        (
            {"items": "rows"},
            "reconcile.key: expected the field of ks.v1.Row holding the key (its items are messages)",
        ),
    ],
)
def test_key_is_named_exactly_when_the_items_are_messages(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check(parse({**TABLE, **change}), REGISTRY)
    assert str(refused.value) == message


async def test_bk_listing_its_own_ids_is_read_as_the_accounts_they_pair_with() -> None:
    """The listed strings are ids BK minted: BK's X1 pairs with Bank's B1, so the two listings name the
    same two accounts and agree (the id map read through the items, as for items that are messages)."""
    fields = IdFields(
        [IdKind("key", ("ks.v1.ListResp.ids", "ks.v1.GetReq.id", "ks.v1.GetResp.id"))], REGISTRY
    )
    book = IdBook(fields, None, Counters())
    book.learn([(Found("key", True, (0, "id"), "B1", ""), Found("key", True, (0, "id"), "X1", ""))], {})
    settings = parse(TABLE)
    check(settings, REGISTRY)
    bank_server = await scripted_server(_side(["B1", "K2"], {}))  # type: ignore[arg-type]
    bk_server = await scripted_server(_side(["X1", "K2"], {}))  # type: ignore[arg-type]
    try:
        async with (
            aio.insecure_channel(bank_server.address) as to_bank,
            aio.insecure_channel(bk_server.address) as to_bk,
        ):
            result = await Sweep(settings, REGISTRY, RuleSet(), to_bank, to_bk, book, timeout=10).run()
    finally:
        await bank_server.stop()
        await bk_server.stop()
    assert (result.keys, result.differing, result.unreadable) == (2, [], [])
