"""`shim reconcile` sweeps services whose fields have any name: keywords, protobuf's own method names."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import descriptor_pb2
from grpc import aio

from comparators import DescriptorRegistry, RuleSet
from comparators.message_api import parse, serialize
from shim.reconcile import Read, ReconcileSettings, Sweep, check
from tests.backends import called_method, scripted_server

F = descriptor_pb2.FieldDescriptorProto
STRING, INT32, MESSAGE = F.TYPE_STRING, F.TYPE_INT32, F.TYPE_MESSAGE


def _registry() -> DescriptorRegistry:
    """rec.v1.Svc: List(ListReq) -> ListResp of Items, Get(GetReq) -> GetResp; every field name awkward."""
    file = descriptor_pb2.FileDescriptorProto(name="rec.proto", package="rec.v1", syntax="proto3")
    shapes: dict[str, list[tuple[str, int, str, bool]]] = {  # name, type, message type, repeated
        "ListReq": [("SerializeToString", INT32, "", False), ("from", STRING, "", False)],
        "Item": [("def", STRING, "", False)],
        "ListResp": [("class", MESSAGE, "Item", True), ("import", STRING, "", False)],
        "Where": [("from", STRING, "", False), ("DESCRIPTOR", STRING, "", False)],
        "GetReq": [("DESCRIPTOR", MESSAGE, "Where", False)],
        "GetResp": [("HasField", STRING, "", False), ("value", STRING, "", False)],
    }
    for name, fields in shapes.items():
        message = file.message_type.add(name=name)
        for number, (field, kind, of, repeated) in enumerate(fields, start=1):
            fd = message.field.add(name=field, number=number, type=kind)  # type: ignore[arg-type]
            fd.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if of:
                fd.type_name = f".rec.v1.{of}"
    service = file.service.add(name="Svc")
    service.method.add(name="List", input_type=".rec.v1.ListReq", output_type=".rec.v1.ListResp")
    service.method.add(name="Get", input_type=".rec.v1.GetReq", output_type=".rec.v1.GetResp")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


REGISTRY = _registry()
SETTINGS = ReconcileSettings(
    list="rec.v1.Svc/List",
    items="class",
    key="def",
    reads=(Read("rec.v1.Svc/Get", "DESCRIPTOR.from"),),
    page_size="SerializeToString",
    page_token="from",
    next_page_token="import",
    size=2,
)
PAGES = {"": (["K1", "K2"], "p2"), "p2": (["K3"], "")}  # page token -> (keys, next page token)


def _side(differs_at: str) -> object:
    """A side listing K1..K3 two a page; its Get answers the key it was asked, `value` "v" (at
    `differs_at`: "w")."""

    async def behaviour(requests: AsyncIterator[bytes], context: object) -> list[bytes]:
        raw = await anext(requests)
        if called_method() == "/rec.v1.Svc/List":
            request = REGISTRY.message_class("rec.v1.ListReq")()
            parse(request, raw)
            assert getattr(request, "SerializeToString") == 2  # noqa: B009
            keys, token = PAGES[getattr(request, "from")]
            items = [{"def": key} for key in keys]
            answer = REGISTRY.message_class("rec.v1.ListResp")(**{"class": items, "import": token})
        else:
            request = REGISTRY.message_class("rec.v1.GetReq")()
            parse(request, raw)
            key = getattr(getattr(request, "DESCRIPTOR"), "from")  # noqa: B009
            value = "w" if key == differs_at else "v"
            answer = REGISTRY.message_class("rec.v1.GetResp")(HasField=key, value=value)
        return [serialize(answer)]

    return behaviour


async def test_a_sweep_reads_fields_of_any_name() -> None:
    """Listing, paging, setting the key and comparing all work with fields named like keywords or API."""
    check(SETTINGS, REGISTRY)
    bank, bk = await scripted_server(_side("")), await scripted_server(_side("K2"))  # type: ignore[arg-type]
    try:
        async with aio.insecure_channel(bank.address) as to_bank, aio.insecure_channel(bk.address) as to_bk:
            result = await Sweep(SETTINGS, REGISTRY, RuleSet(), to_bank, to_bk, timeout=10).run()
    finally:
        await bank.stop()
        await bk.stop()
    assert result.keys == 3
    assert [(r.key, [(m, d.path, d.bank, d.bk) for m, d in r.differences]) for r in result.differing] == [
        ("K2", [("rec.v1.Svc/Get", "value", "v", "w")])
    ]
