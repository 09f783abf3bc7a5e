"""`shim reconcile` lists every key or says why it cannot: a listing that pages is followed to its last
page, and one whose paging is not named, or whose page tokens go round, is refused, never half read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping

import pytest
from google.protobuf import descriptor_pb2
from grpc import aio

from comparators import DescriptorRegistry, RuleSet
from comparators.message_api import parse, serialize
from shim.reconcile import EMPTY_PAGES, Read, ReconcileError, ReconcileSettings, Result, Sweep, check
from tests.backends import called_method, scripted_server

F = descriptor_pb2.FieldDescriptorProto


def _registry() -> DescriptorRegistry:
    """pg.v1.Svc: List(ListReq{limit, after}) -> ListResp{items: [Item{id}], resume}, Get(GetReq{id}) ->
    GetResp{id, value}. `resume` does not look like a page token: only the settings say it is one."""
    file = descriptor_pb2.FileDescriptorProto(name="pg.proto", package="pg.v1", syntax="proto3")
    shapes: dict[str, list[tuple[str, int, str]]] = {  # name, type, message type (repeated)
        "ListReq": [("limit", F.TYPE_INT32, ""), ("after", F.TYPE_STRING, "")],
        "Item": [("id", F.TYPE_STRING, "")],
        "ListResp": [("items", F.TYPE_MESSAGE, "Item"), ("resume", F.TYPE_STRING, "")],
        "GetReq": [("id", F.TYPE_STRING, "")],
        "GetResp": [("id", F.TYPE_STRING, ""), ("value", F.TYPE_STRING, "")],
    }
    for name, fields in shapes.items():
        message = file.message_type.add(name=name)
        for number, (field, kind, of) in enumerate(fields, start=1):
            fd = message.field.add(name=field, number=number, type=kind)  # type: ignore[arg-type]
            fd.label = F.LABEL_REPEATED if of else F.LABEL_OPTIONAL
            if of:
                fd.type_name = f".pg.v1.{of}"
    service = file.service.add(name="Svc")
    service.method.add(name="List", input_type=".pg.v1.ListReq", output_type=".pg.v1.ListResp")
    service.method.add(name="Get", input_type=".pg.v1.GetReq", output_type=".pg.v1.GetResp")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


REGISTRY = _registry()
PAGED = ReconcileSettings(
    list="pg.v1.Svc/List",
    items="items",
    key="id",
    reads=(Read("pg.v1.Svc/Get", "id"),),
    page_size="limit",
    page_token="after",
    next_page_token="resume",
    size=2,
)
Pages = Mapping[str, tuple[list[str], str]]  # page token -> (keys, next page token)
BOOK: Pages = {"": (["K1", "K2"], "p2"), "p2": (["K3", "K4"], "p3"), "p3": (["K5"], "")}


def _side(pages: Pages, asked: list[str] | None = None) -> object:
    """A side answering List from `pages` (at most `limit` keys, else all of the page) and Get with value
    "v"; `asked` collects the page tokens List was asked."""

    async def behaviour(requests: AsyncIterator[bytes], context: object) -> list[bytes]:
        raw = await anext(requests)
        if called_method() == "/pg.v1.Svc/List":
            request = REGISTRY.message_class("pg.v1.ListReq")()
            parse(request, raw)
            if asked is not None:
                asked.append(request.after)
            keys, token = pages[request.after]
            keys = keys[: request.limit] if request.limit else keys
            answer = REGISTRY.message_class("pg.v1.ListResp")(items=[{"id": k} for k in keys], resume=token)
        else:
            request = REGISTRY.message_class("pg.v1.GetReq")()
            parse(request, raw)
            answer = REGISTRY.message_class("pg.v1.GetResp")(id=request.id, value="v")
        return [serialize(answer)]

    return behaviour


async def _sweep(settings: ReconcileSettings, bank_pages: Pages, bk_pages: Pages) -> Result:
    check(settings, REGISTRY)
    bank = await scripted_server(_side(bank_pages))  # type: ignore[arg-type]
    bk = await scripted_server(_side(bk_pages))  # type: ignore[arg-type]
    try:
        async with aio.insecure_channel(bank.address) as to_bank, aio.insecure_channel(bk.address) as to_bk:
            return await Sweep(settings, REGISTRY, RuleSet(), to_bank, to_bk, timeout=10).run()
    finally:
        await bank.stop()
        await bk.stop()


async def test_every_page_is_read() -> None:
    result = await _sweep(PAGED, BOOK, BOOK)
    assert (result.keys, result.differing, result.unreadable) == (5, [], [])


async def test_a_full_page_without_page_tokens_is_refused() -> None:
    """No page_token named: a page holding `size` keys may have more behind it, so the sweep refuses,
    naming the setting, rather than read the first page and say the sides agree."""
    unpaged = ReconcileSettings(**{**_fields(PAGED), "page_token": "", "next_page_token": ""})
    with pytest.raises(ReconcileError) as refused:
        await _sweep(unpaged, BOOK, {"": (["K1"], "")})  # Bank's page is full, BK's not
    assert str(refused.value) == (
        "listing pg.v1.Svc/List on Bank: a full page (2 keys, reconcile.size) and no reconcile.page_token: "
        "the keys after it would go unread; name page_token and next_page_token, or raise reconcile.size "
        "above the number of keys"
    )
    whole = {"": (["K1", "K2", "K3"], "")}  # a listing that answers every key at once, below the size
    result = await _sweep(ReconcileSettings(**{**_fields(unpaged), "size": 4}), whole, whole)
    assert (result.keys, result.differing, result.unreadable) == (3, [], [])


def _fields(settings: ReconcileSettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in settings.__slots__}


class _EndlessEmpty(Mapping[str, tuple[list[str], str]]):
    """Pages that never end: the first lists K1, every one after it is empty and gives a new token."""

    def __getitem__(self, token: str) -> tuple[list[str], str]:
        return (["K1"] if not token else [], f"{token}e")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


async def test_a_page_token_that_comes_back_is_refused_not_followed_forever() -> None:
    """BK's listing gives, on its second page, that same page's token again: followed, it would never end;
    the sweep stops (exit 2 from the command) naming the side and the token."""
    looping = {"": (["K1", "K2"], "p2"), "p2": (["K3"], "p2")}
    with pytest.raises(ReconcileError) as refused:
        await asyncio.wait_for(_sweep(PAGED, BOOK, looping), 30)
    assert str(refused.value) == (
        "listing pg.v1.Svc/List on BK: the page token 'p2' came back a second time: "
        "the listing would never end"
    )


async def test_empty_pages_that_never_end_are_refused() -> None:
    """Empty pages may come before the last one, but not without end: after EMPTY_PAGES empty pages in a
    row, each with a new token, the sweep stops, naming the side."""
    with pytest.raises(ReconcileError) as refused:
        await asyncio.wait_for(_sweep(PAGED, _EndlessEmpty(), BOOK), 30)
    assert str(refused.value) == (
        f"listing pg.v1.Svc/List on Bank: {EMPTY_PAGES} empty pages in a row, each with a new page token: "
        "the listing would never end"
    )
    gaps = {"": (["K1"], "a"), "a": ([], "b"), "b": ([], "c"), "c": (["K2"], "")}  # a few empty pages: read
    result = await _sweep(PAGED, gaps, gaps)
    assert (result.keys, result.differing, result.unreadable) == (2, [], [])
