"""Id declarations (comparators/ids.py): where ids sit, how they are found, rewritten, paired and compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, message
from hypothesis import given, settings
from hypothesis import strategies as st

from comparators import Comparison, DescriptorRegistry, DiffKind, Outcome, Verdict, build_rules, compare
from comparators.ids import (
    Ambiguous,
    Found,
    IdError,
    IdFields,
    IdKind,
    astray,
    pair_up,
    resolve,
    translate_answer,
)
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.units import parse_duration
from tests.comparators._exchanges import (
    BOOK_TRADES,
    GET_BALANCE,
    POST_TRADE,
    SETTLE_TRADES,
    STREAM_ENTRIES,
    answer,
    exchange,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = DescriptorRegistry.from_files([ROOT / "sample_ledger" / "bank.binpb"])

LEDGER = "/bank.v1.Ledger/"
LIST_TRADES = LEDGER + "ListTrades"
CANCEL_TRADE = LEDGER + "CancelTrade"
TRADE_SESSION = LEDGER + "TradeSession"

# The sample's declarations, as in sample_ledger/shim.toml.
TRADE = IdKind(
    "trade",
    minted=("bank.v1.Trade.trade_id", "bank.v1.BookTradesSummary.trade_ids"),
    references=(
        "bank.v1.CancelTradeRequest.trade_id",
        "bank.v1.LedgerEntry.trade_id",
        "bank.v1.SettlementReport.settled_trade_ids",
    ),
    owner_key=("bank.v1.Trade.account_id",),
)
PAGE = IdKind(
    "page",
    minted=("bank.v1.ListTradesResponse.next_page_token", "bank.v1.ListAccountsResponse.next_page_token"),
    references=("bank.v1.ListTradesRequest.page_token", "bank.v1.ListAccountsRequest.page_token"),
    learn_from="all",
    scope="query",
)


def sample_fields(*kinds: IdKind) -> IdFields:
    """IdFields over the sample ledger (the sample's two kinds by default); a fresh one each time."""
    return IdFields(kinds or (TRADE, PAGE), SAMPLE)


# ---- a small schema of our own, for shapes the sample does not have ---------------------------

_F = descriptor_pb2.FieldDescriptorProto
STRING, INT64, INT32, BOOL, DOUBLE, MESSAGE = (
    _F.TYPE_STRING,
    _F.TYPE_INT64,
    _F.TYPE_INT32,
    _F.TYPE_BOOL,
    _F.TYPE_DOUBLE,
    _F.TYPE_MESSAGE,
)


def _field(name: str, number: int, kind: int, *, repeated: bool = False, of: str = "") -> _F:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    fd = _F(name=name, number=number, type=kind, label=label)  # type: ignore[arg-type]
    if of:
        fd.type_name = f".idtest.v1.{of}"
    return fd


def _schema() -> descriptor_pb2.FileDescriptorSet:
    """idtest.v1: maps of messages, integer ids, recursive types and a service with several shapes."""
    file = descriptor_pb2.FileDescriptorProto(
        name="idtest/v1/ids.proto", package="idtest.v1", syntax="proto3"
    )

    def message_type(name: str, *fields: _F) -> descriptor_pb2.DescriptorProto:
        desc = file.message_type.add(name=name)
        desc.field.extend(fields)
        return desc

    message_type(
        "Leaf",
        _field("id", 1, STRING),
        _field("num", 2, INT64),
        _field("owner", 3, STRING),
        _field("tags", 4, STRING, repeated=True),
        _field("nums", 5, INT64, repeated=True),
        _field("flag", 6, BOOL),
        _field("ratio", 7, DOUBLE),
        _field("owners", 8, STRING, repeated=True),
    )
    holder = message_type(
        "Holder",
        _field("by_name", 1, MESSAGE, repeated=True, of="Holder.ByNameEntry"),
        _field("leaves", 2, MESSAGE, repeated=True, of="Leaf"),
        _field("one", 3, MESSAGE, of="Leaf"),
        _field("refs", 4, MESSAGE, repeated=True, of="Holder.RefsEntry"),
        _field("counts", 5, MESSAGE, repeated=True, of="Holder.CountsEntry"),
    )

    def map_entry(owner: descriptor_pb2.DescriptorProto, name: str, value: _F) -> None:
        entry = owner.nested_type.add(name=name)
        entry.options.map_entry = True
        entry.field.extend([_field("key", 1, STRING), value])

    map_entry(holder, "ByNameEntry", _field("value", 2, MESSAGE, of="Leaf"))  # map<string, Leaf>
    map_entry(holder, "RefsEntry", _field("value", 2, STRING))  # map<string, string>
    map_entry(holder, "CountsEntry", _field("value", 2, INT64))  # map<string, int64>
    message_type(
        "Outer",
        _field("holder", 1, MESSAGE, of="Holder"),
        _field("holders", 2, MESSAGE, repeated=True, of="Holder"),
    )
    message_type(
        "Node",
        _field("node_id", 1, STRING),
        _field("child", 2, MESSAGE, of="Node"),
        _field("children", 3, MESSAGE, repeated=True, of="Node"),
    )
    message_type("A", _field("id", 1, STRING), _field("b", 2, MESSAGE, of="B"))
    message_type("B", _field("a", 1, MESSAGE, of="A"))
    message_type("Filter", _field("symbol", 1, STRING), _field("ref", 2, STRING))
    request = message_type(
        "Req",
        _field("account", 1, STRING),
        _field("cursor", 2, INT64),
        _field("size", 3, INT32),
        _field("filter", 4, MESSAGE, of="Filter"),
        _field("accounts", 5, STRING, repeated=True),
        _field("refs", 6, MESSAGE, repeated=True, of="Req.RefsEntry"),
    )
    map_entry(request, "RefsEntry", _field("value", 2, STRING))  # map<string, string>
    message_type("Inner", _field("b", 1, STRING), _field("bs", 2, STRING, repeated=True))
    message_type(
        "Resp",
        _field("a", 1, MESSAGE, of="Inner"),
        _field("token", 2, STRING),
        _field("items", 3, MESSAGE, repeated=True, of="Inner"),
        _field("serial", 4, INT64),
    )
    service = file.service.add(name="Svc")
    for name, output, streaming in [
        ("Get", "Resp", False),
        ("List", "Holder", False),
        ("Scan", "Holder", True),
        ("Walk", "Node", True),
        ("GetB", "B", False),
    ]:
        service.method.add(
            name=name,
            input_type=".idtest.v1.Req",
            output_type=f".idtest.v1.{output}",
            server_streaming=streaming,
        )
    return descriptor_pb2.FileDescriptorSet(file=[file])


CUSTOM = DescriptorRegistry()
CUSTOM.add_set(_schema())
SVC = "/idtest.v1.Svc/"
GET, LIST, SCAN, WALK, GET_B = (SVC + m for m in ("Get", "List", "Scan", "Walk", "GetB"))


def new(name: str, **fields: Any) -> message.Message:
    """A message of the test schema, e.g. new("Leaf", id="L1")."""
    return CUSTOM.message_class(f"idtest.v1.{name}")(**fields)


def custom_fields(*kinds: IdKind) -> IdFields:
    """IdFields over the test schema; a fresh one each time (plans are cached per instance)."""
    return IdFields(kinds, CUSTOM)


def kind(name: str, *minted: str, **settings_: Any) -> IdKind:
    return IdKind(name, minted=minted, **settings_)


def paths(found: list[Found]) -> list[tuple[str | int, ...]]:
    return [f.path for f in found]


# ---- IdKind and IdFields: declarations checked against the descriptors ----------------------


@pytest.mark.parametrize(
    ("settings_", "error"),
    [
        pytest.param({"minted": ()}, "ids.trade.minted: name at least one field", id="no-minted"),
        pytest.param(
            {"learn_from": "reads"},
            "ids.trade.learn_from: 'reads' is not one of writes, all",
            id="learn-from",
        ),
        pytest.param(
            {"scope": "session"}, "ids.trade.scope: 'session' is not one of global, query", id="scope"
        ),
        pytest.param(
            {"scope": "query", "owner_key": ("bank.v1.Trade.account_id",)},
            "ids.trade.owner_key: an id scoped to one query has no owner",
            id="query-scope-with-owner",
        ),
    ],
)
def test_id_kind_checks_its_own_settings(settings_: dict[str, Any], error: str) -> None:
    """No minted field, a bad learn_from or scope, or a query-scoped kind with an owner: an IdError."""
    values: dict[str, Any] = {"minted": ("bank.v1.Trade.trade_id",), **settings_}
    with pytest.raises(IdError) as caught:
        IdKind("trade", **values)
    assert str(caught.value).startswith(error)


def test_id_kind_defaults() -> None:
    """An IdKind learns from writes and is global unless told otherwise."""
    declared = IdKind("trade", minted=("bank.v1.Trade.trade_id",))
    assert (declared.references, declared.owner_key, declared.learn_from, declared.scope) == (
        (),
        (),
        "writes",
        "global",
    )


SAMPLE_MISTAKES: list[Any] = [
    pytest.param(
        kind("trade", "bank.v1.Nope.trade_id"),
        "ids.trade.minted[0]: 'bank.v1.Nope.trade_id' names no message field",
        id="unknown-message",
    ),
    pytest.param(
        kind("trade", "trade_id"),
        "ids.trade.minted[0]: 'trade_id' names no message field",
        id="no-message-at-all",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", references=("bank.v1.Trade.trade_ident",)),
        "ids.trade.references[0]: bank.v1.Trade has no field 'trade_ident'",
        id="unknown-field",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.booked_at"),
        "ids.trade.minted[0]: bank.v1.Trade.booked_at is not a string or integer field, "
        "so it cannot hold an id",
        id="message-field",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.side"),
        "ids.trade.minted[0]: bank.v1.Trade.side is not a string or integer field",
        id="enum-field",
    ),
    pytest.param(
        kind("trade", "bank.v1.Ledger/Nope:response.trade_id"),
        "ids.trade.minted[0]: unknown method bank.v1.Ledger/Nope (not in the descriptors)",
        id="unknown-method",
    ),
    pytest.param(
        kind("trade", "bank.v1.Ledger/PostTrade:reply.trade_id"),
        "ids.trade.minted[0]: 'bank.v1.Ledger/PostTrade:reply.trade_id' is not "
        "package.Service/Method:request.path or ...:response.path",
        id="neither-request-nor-response",
    ),
    pytest.param(
        kind("trade", "bank.v1.Ledger/PostTrade"),
        "ids.trade.minted[0]: 'bank.v1.Ledger/PostTrade' is not package.Service/Method:request.path",
        id="method-without-path",
    ),
    pytest.param(
        kind("trade", "bank.v1.Ledger/PostTrade:response"),
        "ids.trade.minted[0]: 'bank.v1.Ledger/PostTrade:response' is not package.Service/Method",
        id="side-without-field",
    ),
    pytest.param(
        kind("trade", "bank.v1.Ledger/PostTrade:response.trade_ident"),
        "ids.trade.minted[0]: 'bank.v1.Ledger/PostTrade:response.trade_ident': "
        "no field 'trade_ident' on that path",
        id="method-path-unknown-field",
    ),
    pytest.param(
        kind("trade", "bank.v1.Ledger/TradeSession:response.booked.trade_id.more"),
        "ids.trade.minted[0]: 'bank.v1.Ledger/TradeSession:response.booked.trade_id.more': no field 'more'",
        id="method-path-through-a-scalar",
    ),
    pytest.param(
        kind("trade", "bank.v1.Ledger/PostTrade:response.booked_at"),
        "ids.trade.minted[0]: bank.v1.Trade.booked_at is not a string or integer field",
        id="method-path-ends-on-a-message",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", "bank.v1.Ledger/CancelTrade:request.trade_id"),
        "ids.trade.minted[1]: ids are minted in answers: use ...:response.path",
        id="minted-in-a-request",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", references=("bank.v1.Trade.trade_id",)),
        "ids.trade.references[0]: 'bank.v1.Trade.trade_id' is already declared by ids.trade.minted[0]",
        id="minted-and-referenced",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", "bank.v1.Trade.trade_id"),
        "ids.trade.minted[1]: 'bank.v1.Trade.trade_id' is already declared by ids.trade.minted[0]",
        id="minted-twice",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", owner_key=("bank.v1.Position.account_id",)),
        "ids.trade.owner_key[0]: bank.v1.Position mints no trade id",
        id="owner-key-beside-no-minted-id",
    ),
    pytest.param(
        kind(
            "trade",
            "bank.v1.Trade.trade_id",
            references=("bank.v1.LedgerEntry.trade_id",),
            owner_key=("bank.v1.LedgerEntry.account_id",),
        ),
        "ids.trade.owner_key[0]: bank.v1.LedgerEntry mints no trade id",
        id="owner-key-beside-a-reference",
    ),
    pytest.param(
        kind(
            "trade",
            "bank.v1.BookTradesSummary.trade_ids",
            owner_key=("bank.v1.SettlementReport.settled_trade_ids",),
        ),
        "ids.trade.owner_key[0]: an owner key is one value, not a repeated field",
        id="owner-key-repeated",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", owner_key=("bank.v1.Trade.booked_at",)),
        "ids.trade.owner_key[0]: bank.v1.Trade.booked_at is not a string or integer field, "
        "so it cannot hold a routing key",
        id="owner-key-message",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", owner_key=("bank.v1.Ledger/Nope:request.account_id",)),
        "ids.trade.owner_key[0]: unknown method bank.v1.Ledger/Nope",
        id="owner-key-unknown-method",
    ),
    pytest.param(
        kind("trade", "bank.v1.Trade.trade_id", owner_key=("bank.v1.Trade.acct",)),
        "ids.trade.owner_key[0]: bank.v1.Trade has no field 'acct'",
        id="owner-key-unknown-field",
    ),
]


@pytest.mark.parametrize(("declared", "error"), SAMPLE_MISTAKES)
def test_declarations_that_do_not_fit_the_descriptors(declared: IdKind, error: str) -> None:
    """Each kind of mistake in an id declaration is one IdError naming the setting and what is wrong."""
    with pytest.raises(IdError) as caught:
        sample_fields(declared)
    text = str(caught.value)
    assert text.startswith(error), text
    assert "\n" not in text


def test_the_same_location_in_two_kinds_is_an_error() -> None:
    """A field declared by one kind cannot be declared by another: the error names the first declaration."""
    other = kind("order", "bank.v1.Trade.client_order_id", references=("bank.v1.Trade.trade_id",))
    with pytest.raises(
        IdError, match=r"^ids\.order\.references\[0\]: .* already declared by ids\.trade\.minted\[0\]"
    ):
        sample_fields(TRADE, other)


@pytest.mark.parametrize("field_name", ["flag", "ratio"])
def test_bool_and_float_fields_cannot_hold_ids(field_name: str) -> None:
    """Only string and integer fields hold ids: a bool or a double is an IdError naming the field."""
    with pytest.raises(IdError) as caught:
        custom_fields(kind("leaf", f"idtest.v1.Leaf.{field_name}"))
    assert str(caught.value).startswith(
        f"ids.leaf.minted[0]: idtest.v1.Leaf.{field_name} is not a string or integer field"
    )


MAP_MISTAKES: list[Any] = [
    pytest.param(
        kind("ref", "idtest.v1.Holder.RefsEntry.key"),
        "ids.ref.minted[0]: idtest.v1.Holder.RefsEntry.key is a map's key: ids are found in a map's values "
        "(idtest.v1.Holder.RefsEntry.value), not in its keys",
        id="type-level-key",
    ),
    pytest.param(
        kind("ref", "idtest.v1.Leaf.id", references=(f"{GET[1:]}:request.refs.key",)),
        "ids.ref.references[0]: idtest.v1.Req.RefsEntry.key is a map's key: ids are found in a map's values "
        "(idtest.v1.Req.RefsEntry.value), not in its keys",
        id="method-path-key",
    ),
    pytest.param(
        kind("ref", f"{LIST[1:]}:response.by_name.id"),
        f"ids.ref.minted[0]: '{LIST[1:]}:response.by_name.id': no field 'id' on that path "
        "(by_name is a map: name its values, by_name.value)",
        id="method-path-skipping-the-value",
    ),
]


@pytest.mark.parametrize(("declared", "error"), MAP_MISTAKES)
def test_ids_in_map_keys_and_paths_past_a_map_are_refused_in_one_line(declared: IdKind, error: str) -> None:
    """A map's keys cannot hold ids (rewriting a key would move its entry), and a path through a map names
    its values: each mistake is one IdError naming the setting, refused when the config loads."""
    with pytest.raises(IdError) as caught:
        custom_fields(declared)
    assert str(caught.value) == error
    assert "\n" not in str(caught.value)


def test_a_map_field_cannot_hold_ids() -> None:
    """A map field is not an id field (ids are declared on the map's value messages)."""
    with pytest.raises(
        IdError, match=r"^ids\.leaf\.minted\[0\]: idtest\.v1\.Holder\.by_name is not a string"
    ):
        custom_fields(kind("leaf", "idtest.v1.Holder.by_name"))


def test_valid_declarations_are_accepted() -> None:
    """The sample's declarations and method paths with owners on either side build without error."""
    assert set(sample_fields().kinds) == {"trade", "page"}
    built = custom_fields(
        kind("item", f"{GET[1:]}:response.a.b", owner_key=(f"{GET[1:]}:request.account",)),
        kind("serial", f"{GET}:response.serial", owner_key=(f"{GET[1:]}:response.token",)),
        kind("ref", f"{LIST[1:]}:response.one.id", references=(f"{GET[1:]}:request.filter.ref",)),
    )
    assert set(built.kinds) == {"item", "serial", "ref"}


# ---- find ------------------------------------------------------------------------------------


def test_find_type_level_ids_nested() -> None:
    """A type-level id is found wherever its message is nested, with the path from the message index."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id"))
    found = fields.find(LIST, "response", [new("Holder", one=new("Leaf", id="L1"))], None)
    assert found == [Found("leaf", True, (0, "one", "id"), "L1", "")]


def test_find_repeated_scalar_ids() -> None:
    """Every element of a repeated id field is an id, with its list index in the path."""
    fields = custom_fields(kind("tag", "idtest.v1.Leaf.tags"))
    found = fields.find(LIST, "response", [new("Holder", one=new("Leaf", tags=["a", "b"]))], None)
    assert [(f.path, f.value) for f in found] == [((0, "one", "tags", 0), "a"), ((0, "one", "tags", 1), "b")]


def test_find_ids_inside_repeated_messages() -> None:
    """Ids inside the elements of a repeated message field carry the element's index."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id"))
    holder = new("Holder", leaves=[new("Leaf", id="L1"), new("Leaf"), new("Leaf", id="L3")])
    found = fields.find(LIST, "response", [holder], None)
    assert [(f.path, f.value) for f in found] == [
        ((0, "leaves", 0, "id"), "L1"),
        ((0, "leaves", 2, "id"), "L3"),
    ]


def test_find_in_several_streamed_messages() -> None:
    """In a stream, each id's path starts with the index of its message."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id"))
    stream = [new("Holder", one=new("Leaf", id="a")), new("Holder"), new("Holder", one=new("Leaf", id="c"))]
    assert [(f.path, f.value) for f in fields.find(SCAN, "response", stream, None)] == [
        ((0, "one", "id"), "a"),
        ((2, "one", "id"), "c"),
    ]


def test_find_references_in_a_sample_stream() -> None:
    """The sample's ledger entries name trades: references (not minted), one per streamed message."""
    entries = [pb.LedgerEntry(sequence=1, trade_id="T1"), pb.LedgerEntry(sequence=2, trade_id="T2")]
    assert sample_fields().find(STREAM_ENTRIES, "response", entries, None) == [
        Found("trade", False, (0, "trade_id"), "T1", ""),
        Found("trade", False, (1, "trade_id"), "T2", ""),
    ]


def test_find_in_map_values() -> None:
    """Ids in the message values of a map are found, with the map key in the path, in key order."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id"))
    holder = new("Holder")
    holder.by_name["y"].id = "Y1"  # type: ignore[attr-defined]
    holder.by_name["x"].id = "X1"  # type: ignore[attr-defined]
    assert [(f.path, f.value) for f in fields.find(LIST, "response", [holder], None)] == [
        ((0, "by_name", "x", "id"), "X1"),
        ((0, "by_name", "y", "id"), "Y1"),
    ]


def test_ids_in_the_values_of_a_scalar_map_are_found_and_rewritten() -> None:
    """A map's scalar values are declared on its entry (`Holder.RefsEntry.value`): each is found, in key
    order with the key in the path, and rewritten in place, whatever the map's value type."""
    fields = custom_fields(
        kind("ref", "idtest.v1.Holder.RefsEntry.value", "idtest.v1.Holder.CountsEntry.value")
    )
    holder = new("Holder")
    holder.refs.update({"b": "B1", "a": "A1", "e": ""})  # type: ignore[attr-defined]
    holder.counts["n"] = 7  # type: ignore[attr-defined]
    found = fields.find(LIST, "response", [holder], None)
    assert [(f.path, f.value, f.minted) for f in found] == [
        ((0, "refs", "a", "value"), "A1", True),
        ((0, "refs", "b", "value"), "B1", True),
        ((0, "counts", "n", "value"), "7", True),
    ]
    assert fields.in_response(LIST, "idtest.v1.Holder", minted_only=True)
    assert fields.minted_kinds(LIST, "idtest.v1.Holder") == {"ref"}
    table = {"A1": "a-1", "B1": "b-1", "7": "700"}
    assert fields.rewrite(LIST, "response", [holder], lambda f: table[f.value]) == []
    assert dict(holder.refs) == {"a": "a-1", "b": "b-1", "e": ""}  # type: ignore[attr-defined]
    assert dict(holder.counts) == {"n": 700}  # type: ignore[attr-defined]


def test_ids_in_scalar_map_values_are_found_wherever_the_map_is_nested() -> None:
    """An entry's value location holds wherever the map's message appears, however deep: requests of a
    type holding such a map hold ids (in_request), and answers holding it nested are walked into."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id", references=("idtest.v1.Req.RefsEntry.value",)))
    assert fields.in_request(GET, "idtest.v1.Req")
    request = new("Req")
    request.refs["x"] = "L1"  # type: ignore[attr-defined]
    assert fields.find(GET, "request", [request], None) == [
        Found("leaf", False, (0, "refs", "x", "value"), "L1", "")
    ]
    nested = custom_fields(kind("ref", "idtest.v1.Holder.RefsEntry.value"))
    outer = new("Outer", holders=[new("Holder"), new("Holder")])
    outer.holders[1].refs["k"] = "R1"  # type: ignore[attr-defined]
    assert [(f.path, f.value) for f in nested.find(LIST, "response", [outer], None)] == [
        ((0, "holders", 1, "refs", "k", "value"), "R1")
    ]
    assert nested.in_response(LIST, "idtest.v1.Outer", minted_only=True)


def test_the_key_of_a_scalar_map_may_be_the_owner_of_the_id_it_maps_to() -> None:
    """`owner_key` on the entry's key: the id minted in a map's value is owned by the key it sits under."""
    fields = custom_fields(
        kind("ref", "idtest.v1.Holder.RefsEntry.value", owner_key=("idtest.v1.Holder.RefsEntry.key",))
    )
    holder = new("Holder")
    holder.refs.update({"acct-1": "R1", "acct-2": "R2"})  # type: ignore[attr-defined]
    assert [(f.value, f.owner) for f in fields.find(LIST, "response", [holder], None)] == [
        ("R1", "acct-1"),
        ("R2", "acct-2"),
    ]


def test_a_method_path_through_a_scalar_map_names_its_values() -> None:
    """`...:request.refs.value`: every value of the request's map is an id, found and rewritten; before,
    finding raised AttributeError ('str' object has no attribute 'value') on every call of the method."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id", references=(f"{GET[1:]}:request.refs.value",)))
    assert fields.in_request(GET, "idtest.v1.Req")
    request = new("Req")
    request.refs.update({"y": "L2", "x": "L1"})  # type: ignore[attr-defined]
    assert [(f.path, f.value) for f in fields.find(GET, "request", [request], None)] == [
        ((0, "refs", "x", "value"), "L1"),
        ((0, "refs", "y", "value"), "L2"),
    ]
    assert fields.rewrite(GET, "request", [request], lambda f: f.value.lower()) == []
    assert dict(request.refs) == {"x": "l1", "y": "l2"}  # type: ignore[attr-defined]
    assert fields.find(LIST, "request", [request], None) == []  # that method's requests only


def test_a_method_path_through_a_map_of_messages_reaches_into_its_values() -> None:
    """`...:response.by_name.value.id` visits the message of each entry, with the same paths as an id
    declared on the value's type."""
    fields = custom_fields(kind("leaf", f"{LIST}:response.by_name.value.id"))
    holder = new("Holder")
    holder.by_name["y"].id = "Y1"  # type: ignore[attr-defined]
    holder.by_name["x"].id = "X1"  # type: ignore[attr-defined]
    found = fields.find(LIST, "response", [holder], None)
    assert found == custom_fields(kind("leaf", "idtest.v1.Leaf.id")).find(LIST, "response", [holder], None)
    assert [(f.path, f.value, f.minted) for f in found] == [
        ((0, "by_name", "x", "id"), "X1", True),
        ((0, "by_name", "y", "id"), "Y1", True),
    ]
    assert fields.rewrite(LIST, "response", [holder], lambda f: f.value + "!") == []
    assert holder.by_name["x"].id == "X1!"  # type: ignore[attr-defined]


def test_find_integer_ids_as_text() -> None:
    """An integer id field's value is given as decimal text, singular or repeated."""
    fields = custom_fields(kind("num", "idtest.v1.Leaf.num", "idtest.v1.Leaf.nums"))
    leaf = new("Leaf", num=42, nums=[7, -8])
    assert [(f.path, f.value) for f in fields.find(LIST, "response", [new("Holder", one=leaf)], None)] == [
        ((0, "one", "num"), "42"),
        ((0, "one", "nums", 0), "7"),
        ((0, "one", "nums", 1), "-8"),
    ]


def test_find_skips_empty_values() -> None:
    """An empty string or a zero integer is no id, in a singular field or in a list."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id", "idtest.v1.Leaf.num", "idtest.v1.Leaf.tags"))
    leaf = new("Leaf", id="", num=0, tags=["", "t", ""])
    assert paths(fields.find(LIST, "response", [new("Holder", one=leaf)], None)) == [(0, "one", "tags", 1)]


def test_find_reads_owners_from_the_sibling_owner_key() -> None:
    """A minted id's owner is the owner-key field beside it; a reference has no owner."""
    fields = sample_fields()
    trade = pb.Trade(trade_id="T1", account_id="A7")
    assert fields.find(POST_TRADE, "response", [trade], None) == [
        Found("trade", True, (0, "trade_id"), "T1", "A7")
    ]
    cancel = pb.CancelTradeRequest(trade_id="T1", account_id="A7")
    assert fields.find(CANCEL_TRADE, "request", [cancel], None) == [
        Found("trade", False, (0, "trade_id"), "T1", "")
    ]


def test_find_sibling_owner_inside_lists_and_sessions() -> None:
    """Each element's owner comes from its own sibling field, in lists and in oneof-nested stream events."""
    listed = pb.ListTradesResponse(
        trades=[pb.Trade(trade_id="T1", account_id="A1"), pb.Trade(trade_id="T2", account_id="A2")]
    )
    assert [(f.value, f.owner) for f in sample_fields().find(LIST_TRADES, "response", [listed], None)] == [
        ("T1", "A1"),
        ("T2", "A2"),
    ]
    events = [
        pb.TradeSessionEvent(rejected=pb.Rejection()),
        pb.TradeSessionEvent(booked=trade_of("T9", "A9")),
    ]
    assert sample_fields().find(TRADE_SESSION, "response", events, None) == [
        Found("trade", True, (1, "booked", "trade_id"), "T9", "A9")
    ]


def trade_of(trade_id: str, account: str = "A1", **fields: Any) -> pb.Trade:
    return pb.Trade(trade_id=trade_id, account_id=account, **fields)


def test_find_owner_from_the_first_request_for_a_method_path() -> None:
    """An owner key given as a request path is read from the call's first request, for every answer."""
    fields = custom_fields(kind("item", f"{GET}:response.a.b", owner_key=(f"{GET}:request.account",)))
    answers = [new("Resp", a=new("Inner", b="I1"))]
    found = fields.find(GET, "response", answers, new("Req", account="acc-9"))
    assert found == [Found("item", True, (0, "a", "b"), "I1", "acc-9")]
    assert fields.find(GET, "response", answers, None)[0].owner == ""


def test_find_method_owner_for_type_level_ids() -> None:
    """A type-level minted id without a sibling owner takes the method's owner key from the first request."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id", owner_key=(f"{LIST}:request.accounts",)))
    answers = [new("Holder", leaves=[new("Leaf", id="L1"), new("Leaf", id="L2")])]
    request = new("Req", accounts=["first", "second"])
    assert [f.owner for f in fields.find(LIST, "response", answers, request)] == ["first", "first"]
    assert [f.owner for f in fields.find(SCAN, "response", answers, request)] == ["", ""]


def test_find_method_owner_on_the_answer_side() -> None:
    """An owner key given as a response path is read from the answer that holds the id."""
    fields = custom_fields(kind("serial", f"{GET}:response.serial", owner_key=(f"{GET}:response.token",)))
    answers = [new("Resp", serial=5, token="tok-a"), new("Resp", serial=6, token="tok-b")]
    assert [(f.value, f.owner) for f in fields.find(GET, "response", answers, None)] == [
        ("5", "tok-a"),
        ("6", "tok-b"),
    ]


def test_find_at_a_method_path_only_on_that_method_and_side() -> None:
    """An id declared at "Svc/Method:request.x" is found in that method's requests only."""
    fields = custom_fields(
        kind("leaf", "idtest.v1.Leaf.id", references=(f"{GET}:request.filter.ref",)),
    )
    request = new("Req", filter=new("Filter", ref="r1", symbol="s"))
    assert fields.find(GET, "request", [request], None) == [
        Found("leaf", False, (0, "filter", "ref"), "r1", "")
    ]
    assert fields.find(LIST, "request", [request], None) == []
    assert fields.find(GET, "response", [new("Resp")], None) == []


def test_find_at_a_method_path_through_a_repeated_field() -> None:
    """A method path through a repeated message field visits every element."""
    fields = custom_fields(kind("item", f"{GET}:response.items.b"))
    answer_ = new("Resp", items=[new("Inner", b="i0"), new("Inner"), new("Inner", b="i2")])
    assert [(f.path, f.value) for f in fields.find(GET, "response", [answer_], None)] == [
        ((0, "items", 0, "b"), "i0"),
        ((0, "items", 2, "b"), "i2"),
    ]


def test_find_in_a_recursive_type_does_not_loop() -> None:
    """A recursive message type is planned without endless recursion; the top level's id is found."""
    fields = custom_fields(kind("node", "idtest.v1.Node.node_id"))
    tree = new("Node", node_id="root", child=new("Node", node_id="kid"))
    found = fields.find(WALK, "response", [tree], None)
    assert Found("node", True, (0, "node_id"), "root", "") in found
    assert fields.minted_kinds(WALK, "idtest.v1.Node") == {"node"}
    assert fields.in_response(WALK, "idtest.v1.Node", minted_only=True)


def test_find_ids_in_nested_instances_of_a_recursive_type() -> None:
    """A type-level id is found in every instance of a recursive type, however deep."""
    fields = custom_fields(kind("node", "idtest.v1.Node.node_id"))
    tree = new("Node", node_id="root", child=new("Node", node_id="kid"), children=[new("Node", node_id="c0")])
    assert [(f.path, f.value) for f in fields.find(WALK, "response", [tree], None)] == [
        ((0, "node_id"), "root"),
        ((0, "child", "node_id"), "kid"),
        ((0, "children", 0, "node_id"), "c0"),
    ]


def test_find_in_mutually_recursive_types_does_not_depend_on_what_was_planned_first() -> None:
    """Ids found in an answer do not depend on which message types earlier calls made IdFields plan."""
    fresh = custom_fields(kind("a", "idtest.v1.A.id"))
    expected = fresh.find(GET_B, "response", [new("B", a=new("A", id="a1"))], None)
    assert expected == [Found("a", True, (0, "a", "id"), "a1", "")]
    warmed = custom_fields(kind("a", "idtest.v1.A.id"))
    warmed.find(GET_B, "response", [new("A", id="a0")], None)  # plans A (and B within it) first
    assert warmed.find(GET_B, "response", [new("B", a=new("A", id="a1"))], None) == expected


# ---- rewrite ---------------------------------------------------------------------------------


def test_rewrite_replaces_strings_lists_and_integers_in_place() -> None:
    """rewrite() replaces each id by its translation, in the message itself, whatever the field's type."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id", "idtest.v1.Leaf.tags", "idtest.v1.Leaf.nums"))
    holder = new("Holder", leaves=[new("Leaf", id="a", tags=["b", "c"], nums=[1, 2])])
    table = {"a": "A", "b": "B", "c": "C", "1": "100", "2": "200"}
    left = fields.rewrite(LIST, "response", [holder], lambda f: table[f.value])
    assert left == []
    assert holder == new("Holder", leaves=[new("Leaf", id="A", tags=["B", "C"], nums=[100, 200])])


def test_rewrite_returns_and_keeps_the_ids_it_cannot_translate() -> None:
    """Ids the translation leaves (None) are returned, and stay as they were in the message."""
    fields = sample_fields()
    summary = pb.BookTradesSummary(booked=3, trade_ids=["trd_1", "trd_x", "trd_2"])
    table = {"trd_1": "T1", "trd_2": "T2"}
    left = fields.rewrite(BOOK_TRADES, "response", [summary], lambda f: table.get(f.value))
    assert left == [Found("trade", True, (0, "trade_ids", 1), "trd_x", "")]
    assert list(summary.trade_ids) == ["T1", "trd_x", "T2"]


def test_rewrite_touches_only_declared_ids() -> None:
    """Fields that are not declared ids keep their values, even when the translation knows them."""
    fields = sample_fields()
    trade = trade_of("trd_1", account="trd_1", client_order_id="trd_1")
    fields.rewrite(POST_TRADE, "response", [trade], lambda f: "T1")
    assert trade == trade_of("T1", account="trd_1", client_order_id="trd_1")


def test_translate_answer_uses_the_kind_and_bk_id() -> None:
    """translate_answer() maps (kind, BK id) to Bank's id; an id of another kind is not translated."""
    fields = sample_fields()
    listed = pb.ListTradesResponse(trades=[trade_of("trd_1")], next_page_token="trd_1")
    left = translate_answer(fields, LIST_TRADES, [listed], {("trade", "trd_1"): "T1"})
    assert left == [Found("page", True, (0, "next_page_token"), "trd_1", "")]
    assert listed == pb.ListTradesResponse(trades=[trade_of("T1")], next_page_token="trd_1")


# ---- scope -----------------------------------------------------------------------------------


def test_query_scope_ignores_the_kinds_own_fields() -> None:
    """Two requests that differ only in the page token are the same query."""
    fields = sample_fields()
    first = pb.ListTradesRequest(account_id="A1", page_size=10, page_token="p1")
    second = pb.ListTradesRequest(account_id="A1", page_size=10, page_token="p2")
    assert fields.scope(LIST_TRADES, first, "page") == fields.scope(LIST_TRADES, second, "page")
    assert fields.scope(LIST_TRADES, first, "page") != ""
    assert first.page_token == "p1"  # the request itself is left as it was


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(pb.ListTradesRequest(account_id="A2", page_size=10, page_token="p1"), id="account"),
        pytest.param(pb.ListTradesRequest(account_id="A1", page_size=20, page_token="p1"), id="page-size"),
        pytest.param(
            pb.ListTradesRequest(account_id="A1", page_size=10, page_token="p1", symbol="X"), id="filter"
        ),
    ],
)
def test_query_scope_differs_when_another_field_differs(other: pb.ListTradesRequest) -> None:
    """A request that differs in a field other than the kind's ids is another query."""
    fields = sample_fields()
    base = pb.ListTradesRequest(account_id="A1", page_size=10, page_token="p1")
    assert fields.scope(LIST_TRADES, base, "page") != fields.scope(LIST_TRADES, other, "page")


def test_query_scope_includes_the_method() -> None:
    """The same request bytes on two methods are two queries."""
    fields = custom_fields(
        kind("page", "idtest.v1.Resp.token", references=("idtest.v1.Req.account",), scope="query")
    )
    request = new("Req", account="tok", size=3)
    assert fields.scope(GET, request, "page") != fields.scope(LIST, request, "page")


def test_global_scope_is_empty() -> None:
    """A global kind has no query scope: scope() is ""."""
    request = pb.CancelTradeRequest(account_id="A1", trade_id="T1")
    assert sample_fields().scope(CANCEL_TRADE, request, "trade") == ""


def test_query_scope_with_an_integer_reference() -> None:
    """A query-scoped kind whose request field is an integer (a cursor) scopes like a string one."""
    fields = custom_fields(
        kind("cursor", "idtest.v1.Resp.serial", references=("idtest.v1.Req.cursor",), scope="query")
    )
    first, second = new("Req", account="A", cursor=5), new("Req", account="A", cursor=9)
    assert fields.scope(GET, first, "cursor") == fields.scope(GET, second, "cursor")


# ---- pair_up ---------------------------------------------------------------------------------


def test_pair_up_pairs_minted_ids_by_kind_and_path() -> None:
    """Minted ids at the same path and of the same kind pair; the owner travels with each side."""
    fields = sample_fields()
    bank = fields.find(POST_TRADE, "response", [trade_of("T1", "A1")], None)
    bk = fields.find(POST_TRADE, "response", [trade_of("trd_1", "A1")], None)
    assert pair_up(bank, bk) == [
        (
            Found("trade", True, (0, "trade_id"), "T1", "A1"),
            Found("trade", True, (0, "trade_id"), "trd_1", "A1"),
        )
    ]


def test_pair_up_needs_the_same_kind() -> None:
    """Ids of different kinds at the same path do not pair."""
    left = [Found("trade", True, (0, "id"), "T1", "")]
    right = [Found("page", True, (0, "id"), "p1", "")]
    assert pair_up(left, right) == []


def test_pair_up_repeated_lists_of_equal_length_pair_by_position() -> None:
    """A repeated minted list as long on both sides pairs element by element."""
    fields = sample_fields()
    bank = fields.find(BOOK_TRADES, "response", [pb.BookTradesSummary(trade_ids=["T1", "T2"])], None)
    bk = fields.find(BOOK_TRADES, "response", [pb.BookTradesSummary(trade_ids=["trd_a", "trd_b"])], None)
    assert [(a.value, b.value) for a, b in pair_up(bank, bk)] == [("T1", "trd_a"), ("T2", "trd_b")]


def test_pair_up_repeated_lists_of_different_lengths_pair_nothing_there() -> None:
    """A repeated minted list one side made longer pairs nothing at that list; other paths still pair."""
    fields = custom_fields(kind("item", f"{GET}:response.a.bs", f"{GET}:response.token"))
    bank = fields.find(GET, "response", [new("Resp", a=new("Inner", bs=["b1", "b2"]), token="t")], None)
    bk = fields.find(GET, "response", [new("Resp", a=new("Inner", bs=["k1", "k2", "k3"]), token="u")], None)
    assert [(a.value, b.value) for a, b in pair_up(bank, bk)] == [("t", "u")]


def test_pair_up_ignores_references() -> None:
    """References name ids minted earlier: they never pair, even at the same path."""
    fields = sample_fields()
    bank = fields.find(STREAM_ENTRIES, "response", [pb.LedgerEntry(trade_id="T1")], None)
    bk = fields.find(STREAM_ENTRIES, "response", [pb.LedgerEntry(trade_id="trd_1")], None)
    assert len(bank) == len(bk) == 1
    assert pair_up(bank, bk) == []


def test_pair_up_ids_missing_on_one_side_do_not_pair() -> None:
    """An id minted on one side only (the other left the field empty) pairs with nothing."""
    fields = sample_fields()
    bank = fields.find(POST_TRADE, "response", [trade_of("T1")], None)
    bk = fields.find(POST_TRADE, "response", [trade_of("")], None)
    assert pair_up(bank, bk) == []


def test_pair_up_ids_in_repeated_messages_of_different_lengths_pair_nothing() -> None:
    """Ids inside a repeated message list one side made longer say nothing certain: none pair there."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id"))
    bank = fields.find(
        LIST, "response", [new("Holder", leaves=[new("Leaf", id=i) for i in ("L1", "L2")])], None
    )
    bk = fields.find(
        LIST, "response", [new("Holder", leaves=[new("Leaf", id=i) for i in ("x", "y", "z")])], None
    )
    assert pair_up(bank, bk) == []


def test_pair_up_stops_at_the_first_message_whose_ids_sit_elsewhere() -> None:
    """A stream one side sent one message more in (an ack naming nothing, after the first): from there
    message i of one stream faces another message of the other, so nothing from it on pairs, though
    later messages look alike (an id at the same field each)."""
    fields = sample_fields()
    bank = fields.find(POST_TRADE, "response", [trade_of(t, "A1") for t in ("T1", "T2", "T3")], None)
    bk = fields.find(POST_TRADE, "response", [trade_of(t, "A1") for t in ("k1", "", "k2", "k3")], None)
    assert astray(bank, bk) == 1
    assert [(a.value, b.value) for a, b in pair_up(bank, bk)] == [("T1", "k1")]
    lined = fields.find(POST_TRADE, "response", [trade_of(t, "A1") for t in ("k1", "k2", "k3")], None)
    assert astray(bank, lined) is None
    assert [(a.value, b.value) for a, b in pair_up(bank, lined)] == [("T1", "k1"), ("T2", "k2"), ("T3", "k3")]


def test_an_id_named_again_that_has_a_pair_already_takes_no_place() -> None:
    """Bank's second message names T1 again (already paired with k1), where BK's names nothing: it mints
    nothing, so the streams still face each other and T2 pairs with k2. An id not known to have a pair
    (T9) in that place still sets them astray."""
    fields = sample_fields()
    bank = fields.find(POST_TRADE, "response", [trade_of(t, "A1") for t in ("T1", "T1", "T2")], None)
    bk = fields.find(POST_TRADE, "response", [trade_of(t, "A1") for t in ("k1", "", "k2")], None)
    paired = {("bank", "T1"), ("bk", "k1")}

    def known(found: Found, side: str) -> bool:
        return (side, found.value) in paired

    assert astray(bank, bk) == 1
    assert astray(bank, bk, known) is None
    assert [(a.value, b.value) for a, b in pair_up(bank, bk, known=known)][-1] == ("T2", "k2")
    other = fields.find(POST_TRADE, "response", [trade_of(t, "A1") for t in ("T1", "T9", "T2")], None)
    assert astray(other, bk, known) == 1
    # ids in the same places line up, known or not (a page token minted again pairs anew)
    lined = fields.find(POST_TRADE, "response", [trade_of(t, "A1") for t in ("k1", "k7", "k2")], None)
    assert astray(bank, lined, lambda found, side: side == "bank" and known(found, side)) is None


def test_a_list_one_side_made_longer_does_not_set_the_stream_astray() -> None:
    """List positions are not places here: a longer list inside a message pairs nothing at that list
    (above), and the messages after it still pair."""
    fields = sample_fields()
    summaries = [["T1", "T2"], ["T3"]], [["k1", "k2", "k9"], ["k3"]]
    bank, bk = (
        fields.find(BOOK_TRADES, "response", [pb.BookTradesSummary(trade_ids=ids) for ids in side], None)
        for side in summaries
    )
    assert astray(bank, bk) is None
    assert [(a.value, b.value) for a, b in pair_up(bank, bk)] == [("T3", "k3")]


# ---- what a method can hold ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "output_type", "kinds"),
    [
        pytest.param(POST_TRADE, "bank.v1.Trade", {"trade"}, id="trade"),
        pytest.param(LIST_TRADES, "bank.v1.ListTradesResponse", {"trade", "page"}, id="list-trades"),
        pytest.param(TRADE_SESSION, "bank.v1.TradeSessionEvent", {"trade"}, id="in-a-oneof"),
        pytest.param(BOOK_TRADES, "bank.v1.BookTradesSummary", {"trade"}, id="repeated"),
        pytest.param(SETTLE_TRADES, "bank.v1.SettlementReport", set(), id="references-only"),
        pytest.param(GET_BALANCE, "bank.v1.Balance", set(), id="no-ids"),
        pytest.param(GET_BALANCE, "bank.v1.Nope", set(), id="unknown-type"),
    ],
)
def test_minted_kinds(method: str, output_type: str, kinds: set[str]) -> None:
    """minted_kinds() lists the kinds an answer type can mint, however deep, never mere references."""
    assert sample_fields().minted_kinds(method, output_type) == kinds


def test_minted_kinds_at_a_method_path() -> None:
    """A kind minted at a method path is minted by that method only."""
    fields = custom_fields(kind("item", f"{GET}:response.token"), kind("leaf", "idtest.v1.Leaf.id"))
    assert fields.minted_kinds(GET, "idtest.v1.Resp") == {"item"}
    assert fields.minted_kinds(SVC + "Other", "idtest.v1.Resp") == set()
    assert fields.minted_kinds(LIST, "idtest.v1.Holder") == {"leaf"}


@pytest.mark.parametrize(
    ("method", "input_type", "expected"),
    [
        pytest.param(CANCEL_TRADE, "bank.v1.CancelTradeRequest", True, id="trade-reference"),
        pytest.param(LIST_TRADES, "bank.v1.ListTradesRequest", True, id="page-token"),
        pytest.param(GET_BALANCE, "bank.v1.GetBalanceRequest", False, id="no-ids"),
        pytest.param(TRADE_SESSION, "bank.v1.TradeSessionRequest", False, id="nested-without-ids"),
        pytest.param(GET_BALANCE, "bank.v1.Nope", False, id="unknown-type"),
    ],
)
def test_in_request(method: str, input_type: str, expected: bool) -> None:
    """in_request() says whether a method's requests can hold ids of any kind."""
    assert sample_fields().in_request(method, input_type) is expected


def test_in_request_at_a_method_path() -> None:
    """A request path makes that method's requests hold ids, not other methods' with the same type."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id", references=(f"{GET}:request.filter.ref",)))
    assert fields.in_request(GET, "idtest.v1.Req")
    assert not fields.in_request(LIST, "idtest.v1.Req")


@pytest.mark.parametrize(
    ("method", "output_type", "any_id", "minted"),
    [
        pytest.param(POST_TRADE, "bank.v1.Trade", True, True, id="minting"),
        pytest.param(SETTLE_TRADES, "bank.v1.SettlementReport", True, False, id="references-only"),
        pytest.param(STREAM_ENTRIES, "bank.v1.LedgerEntry", True, False, id="stream-of-references"),
        pytest.param(GET_BALANCE, "bank.v1.Balance", False, False, id="no-ids"),
        pytest.param(GET_BALANCE, "bank.v1.Nope", False, False, id="unknown-type"),
    ],
)
def test_in_response(method: str, output_type: str, any_id: bool, minted: bool) -> None:
    """in_response() says whether answers can hold ids; with minted_only, whether they can mint any."""
    fields = sample_fields()
    assert fields.in_response(method, output_type) is any_id
    assert fields.in_response(method, output_type, minted_only=True) is minted


def test_in_response_at_a_method_path() -> None:
    """A response path counts for its method: minted or, without minted_only, as a reference."""
    fields = custom_fields(
        kind("item", f"{GET}:response.token", references=(f"{LIST}:response.one.owner",)),
    )
    assert fields.in_response(GET, "idtest.v1.Resp", minted_only=True)
    assert fields.in_response(LIST, "idtest.v1.Holder")
    assert not fields.in_response(LIST, "idtest.v1.Holder", minted_only=True)
    assert not fields.in_response(SCAN, "idtest.v1.Holder")


# ---- compare with ids --------------------------------------------------------------------------

Row = tuple[str, DiffKind, object, object]


def rows(comparison: Comparison) -> list[Row]:
    return [(d.path, d.kind, d.bank, d.bk) for d in comparison.differences]


def judge(
    method: str,
    bank: Outcome,
    bk: Outcome | None,
    *,
    pairs: tuple[tuple[str, str, str], ...] = (),
    rules: list[dict[str, Any]] | None = None,
    with_ids: bool = True,
    **kwargs: Any,
) -> Comparison:
    """compare() over the sample, with the sample's id kinds and the given (kind, Bank id, BK id) pairs."""
    rule_set = build_rules(rules, SAMPLE, parse_duration) if rules else None
    ids = sample_fields() if with_ids else None
    return compare(exchange(method, bank, bk, ids=pairs, **kwargs), SAMPLE, rule_set, ids)


T1 = ("trade", "T1", "trd_1")
T2 = ("trade", "T2", "trd_2")
T3 = ("trade", "T3", "trd_3")


def test_a_mapped_pair_is_equal() -> None:
    """BK's id that pairs with Bank's compares equal: a match with no difference."""
    bank, bk = trade_of("T1", symbol="AAPL"), trade_of("trd_1", symbol="AAPL")
    comparison = judge(POST_TRADE, answer(bank), answer(bk), pairs=(T1,))
    assert (comparison.verdict, comparison.differences, comparison.decoded) == (Verdict.MATCH, (), True)


def test_a_mapped_pair_does_not_hide_other_differences() -> None:
    """With the id mapped, the other fields are still compared (in Bank's terms)."""
    comparison = judge(
        POST_TRADE,
        answer(trade_of("T1", symbol="AAPL")),
        answer(trade_of("trd_1", symbol="MSFT")),
        pairs=(T1,),
    )
    assert comparison.verdict is Verdict.MISMATCH
    assert rows(comparison) == [("symbol", DiffKind.CHANGED, "AAPL", "MSFT")]


def test_an_unknown_pair_is_an_unmapped_id() -> None:
    """A BK id that pairs with no Bank id and differs from Bank's is a real unmapped-id difference."""
    comparison = judge(POST_TRADE, answer(trade_of("T1")), answer(trade_of("trd_1")), pairs=(T2,))
    assert comparison.verdict is Verdict.MISMATCH
    assert rows(comparison) == [("trade_id", DiffKind.UNMAPPED_ID, "T1", "trd_1")]
    assert comparison.real_differences == comparison.differences


def test_bk_naming_another_known_id_is_a_change_in_bank_terms() -> None:
    """BK naming a different id that is known is a plain change, shown as the two Bank ids."""
    comparison = judge(POST_TRADE, answer(trade_of("T1")), answer(trade_of("trd_2")), pairs=(T1, T2))
    assert comparison.verdict is Verdict.MISMATCH
    assert rows(comparison) == [("trade_id", DiffKind.CHANGED, "T1", "T2")]


def test_the_same_id_on_both_sides_needs_no_pair() -> None:
    """An id both sides spell the same is equal even with no pair known."""
    comparison = judge(POST_TRADE, answer(trade_of("X1", symbol="A")), answer(trade_of("X1", symbol="B")))
    assert rows(comparison) == [("symbol", DiffKind.CHANGED, "A", "B")]


def test_identical_answers_are_read_through_the_map_when_the_id_spaces_overlap() -> None:
    """Where both sides mint plain numbers, BK's answer naming its own trade 5 (Bank's 7) is a difference
    from Bank's naming its 5 (BK's 7), byte-identical as the two answers are; BK naming its 7 matches.
    Identical answers whose ids no pair changes still match without being decoded."""
    pairs = (("trade", "5", "7"), ("trade", "7", "5"))

    def entry(trade_id: str) -> Outcome:
        return answer(pb.LedgerEntry(sequence=1, trade_id=trade_id, amount="10"))

    same = judge(STREAM_ENTRIES, entry("5"), entry("5"), pairs=pairs)
    assert same.verdict is Verdict.MISMATCH
    assert rows(same) == [("[0].trade_id", DiffKind.CHANGED, "5", "7")]
    paired = judge(STREAM_ENTRIES, entry("5"), entry("7"), pairs=pairs)
    assert (paired.verdict, paired.differences) == (Verdict.MATCH, ())
    for unchanged in ((), (("trade", "5", "5"),)):
        fast = judge(STREAM_ENTRIES, entry("5"), entry("5"), pairs=unchanged)
        assert (fast.verdict, fast.differences, fast.decoded) == (Verdict.MATCH, (), False)


TRADE_WORDING = {
    "rule": "status",
    "details": r"trade '?(\w+)'? (?:not found|does not exist)",
    "name": "wording",
}


def _no_trade(details: str) -> Outcome:
    return answer(code=5, details=details)


def test_an_id_a_status_details_pattern_captures_compares_through_the_map() -> None:
    """A `details` pattern capturing an id: BK's captured id that pairs with Bank's captured one is the
    same id, so the two wordings of one refusal are tolerated. A BK id with no pair, or paired with
    another Bank id, is a different one; without ids, or with exact details, the text is compared as it is."""
    bank, bk = _no_trade("trade 'T5' not found"), _no_trade("trade trd_9 does not exist")
    t5 = ("trade", "T5", "trd_9")
    paired = judge(CANCEL_TRADE, bank, bk, pairs=(t5,), rules=[TRADE_WORDING])
    assert paired.verdict is Verdict.MATCH
    assert [(d.path, d.rule) for d in paired.differences] == [("status.details", "wording")]
    for pairs, with_ids, rules in (
        ((), True, [TRADE_WORDING]),
        ((("trade", "T6", "trd_9"), ("trade", "T5", "trd_5")), True, [TRADE_WORDING]),
        ((t5,), False, [TRADE_WORDING]),
        ((t5,), True, None),
    ):
        other = judge(CANCEL_TRADE, bank, bk, pairs=pairs, rules=rules, with_ids=with_ids)
        assert other.verdict is Verdict.MISMATCH
        assert [(d.path, d.rule) for d in other.differences] == [("status.details", "")]


def test_exact_details_naming_an_id_read_bk_s_id_as_the_bank_id_it_pairs_with() -> None:
    """With the default exact details, a refusal worded alike but naming BK's id where Bank's names its
    own is the same refusal, once BK's id is read as the Bank id it pairs with: no difference. A BK id
    paired with another Bank id, other words, a BK id inside a longer word, or plain numbers (a count could
    read as an id by chance) still differ."""
    t5 = ("trade", "T5", "trd_9")
    same = judge(
        CANCEL_TRADE, _no_trade("trade 'T5' not found"), _no_trade("trade 'trd_9' not found"), pairs=(t5,)
    )
    assert (same.verdict, same.differences) == (Verdict.MATCH, ())
    for bank_says, bk_says, pairs in (
        ("trade 'T5' not found", "trade 'trd_9' not found", (("trade", "T6", "trd_9"),)),
        ("trade 'T5' not found", "trade 'trd_9' is unknown", (t5,)),
        ("trade 'T5' not found", "trade 'xtrd_9' not found", (t5,)),
        ("trade 7: 7 lots held", "trade 5: 5 lots held", (("trade", "7", "5"),)),
    ):
        other = judge(CANCEL_TRADE, _no_trade(bank_says), _no_trade(bk_says), pairs=pairs)
        assert other.verdict is Verdict.MISMATCH, (bank_says, bk_says)
        assert [(d.path, d.rule) for d in other.differences] == [("status.details", "")]


def test_ids_map_when_bk_is_the_primary() -> None:
    """With BK as the primary, its answer is still the one read through the map."""
    comparison = judge(
        POST_TRADE,
        answer(trade_of("trd_1", symbol="A")),
        answer(trade_of("T1", symbol="A")),
        pairs=(T1,),
        primary_is_bank=False,
    )
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())
    unknown = judge(POST_TRADE, answer(trade_of("trd_9")), answer(trade_of("T1")), primary_is_bank=False)
    assert rows(unknown) == [("trade_id", DiffKind.UNMAPPED_ID, "T1", "trd_9")]


def test_repeated_minted_ids_map_element_by_element() -> None:
    """A batch's minted ids compare through the map; an unknown one is an unmapped id at its index."""
    bank = answer(pb.BookTradesSummary(booked=3, trade_ids=["T1", "T2", "T3"]))
    mapped = judge(
        BOOK_TRADES,
        bank,
        answer(pb.BookTradesSummary(booked=3, trade_ids=["trd_1", "trd_2", "trd_3"])),
        pairs=(T1, T2, T3),
    )
    assert (mapped.verdict, mapped.differences) == (Verdict.MATCH, ())
    partly = judge(
        BOOK_TRADES,
        bank,
        answer(pb.BookTradesSummary(booked=3, trade_ids=["trd_1", "trd_x", "trd_3"])),
        pairs=(T1, T2, T3),
    )
    assert rows(partly) == [("trade_ids[1]", DiffKind.UNMAPPED_ID, "T2", "trd_x")]


def test_references_in_a_stream_compare_through_the_map() -> None:
    """Ledger entries stream trade references: mapped ones are equal, an unknown one is unmapped."""

    def entries(*trade_ids: str) -> Outcome:
        return answer(*(pb.LedgerEntry(sequence=i + 1, trade_id=t) for i, t in enumerate(trade_ids)))

    mapped = judge(STREAM_ENTRIES, entries("T1", "T2"), entries("trd_1", "trd_2"), pairs=(T1, T2))
    assert (mapped.verdict, mapped.differences) == (Verdict.MATCH, ())
    unknown = judge(STREAM_ENTRIES, entries("T1", "T2"), entries("trd_1", "trd_9"), pairs=(T1, T2))
    assert rows(unknown) == [("[1].trade_id", DiffKind.UNMAPPED_ID, "T2", "trd_9")]


SETTLED_ANY_ORDER = {
    "path": "bank.v1.SettlementReport.settled_trade_ids",
    "rule": "multiset",
    "name": "settled trades in any order",
}


def test_a_multiset_of_references_pairs_through_the_map() -> None:
    """Settled trade ids in another order match once read as Bank's; an unknown one is unmapped."""
    bank = answer(pb.SettlementReport(account_id="A1", settled_trade_ids=["T1", "T2", "T3"], settled_count=3))
    shuffled = answer(
        pb.SettlementReport(account_id="A1", settled_trade_ids=["trd_3", "trd_1", "trd_2"], settled_count=3)
    )
    comparison = judge(SETTLE_TRADES, bank, shuffled, pairs=(T1, T2, T3), rules=[SETTLED_ANY_ORDER])
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())
    one_unknown = answer(
        pb.SettlementReport(account_id="A1", settled_trade_ids=["trd_3", "trd_x", "trd_1"], settled_count=3)
    )
    comparison = judge(SETTLE_TRADES, bank, one_unknown, pairs=(T1, T2, T3), rules=[SETTLED_ANY_ORDER])
    assert comparison.verdict is Verdict.MISMATCH
    assert rows(comparison) == [("settled_trade_ids[1]", DiffKind.UNMAPPED_ID, "T2", "trd_x")]


def test_a_keyed_list_pairs_through_the_map() -> None:
    """Trades keyed by their id pair across the two sides once BK's ids read as Bank's."""
    keyed = [
        {"path": "bank.v1.ListTradesResponse.trades", "rule": "keyed", "key": ["trade_id"], "name": "by id"}
    ]
    bank = answer(pb.ListTradesResponse(trades=[trade_of("T1", fee="1"), trade_of("T2", fee="2")]))
    bk = answer(pb.ListTradesResponse(trades=[trade_of("trd_2", fee="2"), trade_of("trd_1", fee="1")]))
    comparison = judge(LIST_TRADES, bank, bk, pairs=(T1, T2), rules=keyed)
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())
    changed = answer(pb.ListTradesResponse(trades=[trade_of("trd_2", fee="2"), trade_of("trd_1", fee="9")]))
    assert rows(judge(LIST_TRADES, bank, changed, pairs=(T1, T2), rules=keyed)) == [
        ("trades[trade_id=T1].fee", DiffKind.CHANGED, "1", "9")
    ]


def test_page_tokens_compare_through_the_map() -> None:
    """A minted page token that pairs compares equal; another kind's pair does not translate it."""
    bank = answer(pb.ListTradesResponse(trades=[trade_of("T1")], next_page_token="p1"))
    bk = answer(pb.ListTradesResponse(trades=[trade_of("trd_1")], next_page_token="tok_1"))
    mapped = judge(LIST_TRADES, bank, bk, pairs=(T1, ("page", "p1", "tok_1")))
    assert (mapped.verdict, mapped.differences) == (Verdict.MATCH, ())
    wrong_kind = judge(LIST_TRADES, bank, bk, pairs=(T1, ("trade", "p1", "tok_1")))
    assert rows(wrong_kind) == [("next_page_token", DiffKind.UNMAPPED_ID, "p1", "tok_1")]


def test_without_ids_the_ids_are_plain_values() -> None:
    """Without IdFields, differing ids are a plain change, whatever pairs the exchange carries."""
    comparison = judge(
        POST_TRADE, answer(trade_of("T1")), answer(trade_of("trd_1")), pairs=(T1,), with_ids=False
    )
    assert comparison.verdict is Verdict.MISMATCH
    assert rows(comparison) == [("trade_id", DiffKind.CHANGED, "T1", "trd_1")]


def test_a_tainted_mismatch_is_tainted() -> None:
    """A mismatch on a key out of step is TAINTED, with the taint as the reason and the differences kept."""
    reason = "account A1: BK missed write /bank.v1.Ledger/Deposit"
    comparison = judge(
        POST_TRADE,
        answer(trade_of("T1", fee="1")),
        answer(trade_of("trd_1", fee="2")),
        pairs=(T1,),
        tainted=reason,
    )
    assert (comparison.verdict, comparison.reason) == (Verdict.TAINTED, reason)
    assert rows(comparison) == [("fee", DiffKind.CHANGED, "1", "2")]


def test_a_tainted_match_stays_a_match() -> None:
    """A taint explains differences; when there are none the verdict is still MATCH."""
    comparison = judge(
        POST_TRADE, answer(trade_of("T1")), answer(trade_of("trd_1")), pairs=(T1,), tainted="out of step"
    )
    assert (comparison.verdict, comparison.reason) == (Verdict.MATCH, "")
    tolerated = judge(
        POST_TRADE,
        answer(trade_of("T1", fee="1.0")),
        answer(trade_of("trd_1", fee="1")),
        pairs=(T1,),
        rules=[{"path": "bank.v1.Trade.fee", "rule": "decimal"}],
        tainted="out of step",
    )
    assert tolerated.verdict is Verdict.MATCH


def test_a_tainted_shadow_error_stays_a_shadow_error() -> None:
    """A taint does not turn a shadow error into TAINTED."""
    comparison = judge(
        POST_TRADE,
        answer(trade_of("T1")),
        Outcome(code=4, local="shadow timeout after 2s"),
        tainted="out of step",
    )
    assert (comparison.verdict, comparison.reason) == (Verdict.SHADOW_ERROR, "shadow timeout after 2s")


@pytest.mark.parametrize(
    "shadow", [pytest.param(None, id="not-sent"), pytest.param(answer(pb.Trade()), id="sent")]
)
def test_a_request_naming_unmapped_ids_is_skipped(shadow: Outcome | None) -> None:
    """A request whose ids have no BK counterpart is SKIPPED, one unmapped-id difference per id."""
    unmapped = (("trade", "trade_id", "T9"), ("page", "page_token", "p3"))
    comparison = judge(CANCEL_TRADE, answer(trade_of("T9")), shadow, unmapped=unmapped)
    assert comparison.verdict is Verdict.SKIPPED
    assert rows(comparison) == [
        ("trade_id", DiffKind.UNMAPPED_ID, "T9", None),
        ("page_token", DiffKind.UNMAPPED_ID, "p3", None),
    ]
    assert comparison.reason == "not mirrored: the request names ids the shadow has no counterpart for"
    noted = judge(CANCEL_TRADE, answer(trade_of("T9")), shadow, unmapped=unmapped, note="unmapped T9")
    assert noted.reason == "unmapped T9"


def test_a_cancelled_call_is_skipped_before_its_unmapped_ids() -> None:
    """A call the client cancelled is skipped as cancelled, even if it also named unmapped ids."""
    comparison = judge(
        CANCEL_TRADE, answer(pb.Trade()), None, unmapped=(("trade", "trade_id", "T9"),), cancelled=True
    )
    assert comparison.verdict is Verdict.SKIPPED
    assert comparison.differences == ()
    assert comparison.reason.startswith("cancelled by the client")


# ---- a property: rewriting through a bijection and back is the identity --------------------

tags = st.text(min_size=1, max_size=6)
numbers = st.integers(min_value=-(2**63), max_value=2**63 - 1).filter(bool)


def _bijection(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[tuple[Any, Any]]]:
    """Pairs (a, b) in which no a and no b repeats: a one-to-one map."""
    return st.lists(
        st.tuples(values, values), min_size=1, max_size=6, unique_by=(lambda p: p[0], lambda p: p[1])
    )


@settings(max_examples=100, deadline=None)
@given(
    tag_pairs=_bijection(tags),
    number_pairs=_bijection(numbers),
    data=st.data(),
)
def test_rewrite_there_and_back_is_the_identity(
    tag_pairs: list[tuple[str, str]], number_pairs: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Rewriting ids through a one-to-one map, then through its inverse, gives back the original bytes."""
    fields = custom_fields(
        kind("tag", "idtest.v1.Leaf.tags", "idtest.v1.Leaf.id"), kind("num", "idtest.v1.Leaf.nums")
    )
    tag_values = [a for a, _ in tag_pairs]
    number_values = [a for a, _ in number_pairs]
    leaves = data.draw(
        st.lists(
            st.builds(
                lambda i, t, n: new("Leaf", id=i, tags=t, nums=n),
                st.sampled_from(tag_values),
                st.lists(st.sampled_from(tag_values), max_size=4),
                st.lists(st.sampled_from(number_values), max_size=4),
            ),
            max_size=4,
        )
    )
    holder = new("Holder", leaves=leaves)
    original = holder.SerializeToString(deterministic=True)
    forward = {("tag", a): b for a, b in tag_pairs} | {("num", str(a)): str(b) for a, b in number_pairs}
    backward = {(k, b): a for (k, a), b in forward.items()}
    assert fields.rewrite(LIST, "response", [holder], lambda f: forward[(f.kind, f.value)]) == []
    assert fields.rewrite(LIST, "response", [holder], lambda f: backward[(f.kind, f.value)]) == []
    assert holder.SerializeToString(deterministic=True) == original


# ---- one location, several kinds; ids inside rich error details ------------------------------


def _violation_status(*subjects: str) -> Any:
    """A google.rpc.Status whose PreconditionFailure names `subjects`."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(type="T", subject=s, description="d")
                for s in subjects
            ]
        )
    )
    return status_pb2.Status(code=9, message="failed precondition", details=[detail])


SUBJECT = "google.rpc.PreconditionFailure.Violation.subject"
ACCOUNT_OR_MOVEMENT = (
    kind("account", "idtest.v1.Leaf.id", references=(SUBJECT,)),
    kind("movement", "idtest.v1.Inner.b", references=(SUBJECT,)),
)


def test_a_reference_location_may_hold_several_kinds() -> None:
    """Two kinds may declare the same reference location: each id found there names both kinds."""
    fields = custom_fields(*ACCOUNT_OR_MOVEMENT)
    (found,) = fields.find(GET, "", [_violation_status("A1")], None)
    assert (found.kind, found.kinds, found.every_kind, found.value) == (
        "account",
        ("account", "movement"),
        ("account", "movement"),
        "A1",
    )


def test_a_location_that_mints_holds_one_kind() -> None:
    """A minted location declared by a second kind is refused, naming the first declaration."""
    with pytest.raises(
        IdError, match=r"already declared by ids\.account\.minted\[0\]: a location that mints"
    ):
        custom_fields(kind("account", "idtest.v1.Leaf.id"), kind("other", "idtest.v1.Leaf.id"))


def test_resolve_takes_the_kind_that_knows_the_value_and_names_both_when_two_disagree() -> None:
    """A shared location is translated by whichever kind knows the value; two kinds that know it
    differently make an Ambiguous naming both."""
    found = Found("account", False, (0, "subject"), "X", "", ("account", "movement"))
    known = {("movement", "X"): "mv_1"}
    assert resolve(found, lambda k, v: known.get((k, v))) == "mv_1"
    assert resolve(found, lambda k, v: None) is None
    known[("account", "X")] = "acc_9"
    both = resolve(found, lambda k, v: known.get((k, v)))
    assert isinstance(both, Ambiguous)
    assert str(both) == "'X' is known as account 'acc_9' and as movement 'mv_1'"


def test_ids_inside_rich_error_details_are_found_and_rewritten() -> None:
    """Ids packed in a google.rpc.Status's Any details are found at their path and rewritten in place."""
    fields = custom_fields(*ACCOUNT_OR_MOVEMENT)
    status = _violation_status("acc_1", "mv_2", "nobody")
    known = {("account", "acc_1"): "A1", ("movement", "mv_2"): "M2"}
    left = translate_answer(fields, GET, [status], known, side="")
    assert [(f.path, f.value) for f in left] == [((0, "details", 0, "violations", 2, "subject"), "nobody")]
    from google.rpc import error_details_pb2

    unpacked = error_details_pb2.PreconditionFailure()
    status.details[0].Unpack(unpacked)
    assert [v.subject for v in unpacked.violations] == ["A1", "M2", "nobody"]


def test_ids_in_rich_error_details_compare_through_the_id_map() -> None:
    """BK's error details naming its own ids equal Bank's naming Bank's, when the pairs are known; an id
    with no pair stays a real unmapped-id difference."""
    fields = custom_fields(*ACCOUNT_OR_MOVEMENT)
    key = "grpc-status-details-bin"

    def failed(*subjects: str) -> Outcome:
        status = _violation_status(*subjects)
        return Outcome(code=9, details=status.message, trailing_metadata=((key, status.SerializeToString()),))

    pairs = (("account", "A1", "acc_1"), ("movement", "M2", "mv_2"))
    same = compare(
        exchange(GET, failed("A1", "M2"), failed("acc_1", "mv_2"), ids=pairs), CUSTOM, None, fields
    )
    assert (same.verdict, same.differences) == (Verdict.MATCH, ())
    other = compare(
        exchange(GET, failed("A1", "M2"), failed("acc_1", "mv_7"), ids=pairs), CUSTOM, None, fields
    )
    assert other.verdict is Verdict.MISMATCH
    assert [(d.path, d.kind, d.bank, d.bk) for d in other.differences] == [
        ("status.rich_details.details[0].violations[1].subject", DiffKind.UNMAPPED_ID, "M2", "mv_7")
    ]


def test_identical_rich_error_details_are_read_through_the_id_map() -> None:
    """Byte-identical error details naming acc_1 on both sides differ when BK's acc_1 is Bank's A1: Bank
    named another account."""
    fields = custom_fields(*ACCOUNT_OR_MOVEMENT)
    status = _violation_status("acc_1", "mv_2")
    failed = Outcome(
        code=9,
        details=status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )
    pairs = (("account", "A1", "acc_1"), ("movement", "M2", "mv_2"))
    comparison = compare(exchange(GET, failed, failed, ids=pairs), CUSTOM, None, fields)
    assert comparison.verdict is Verdict.MISMATCH
    assert [(d.path, d.kind, d.bank, d.bk) for d in comparison.differences] == [
        ("status.rich_details.details[0].violations[0].subject", DiffKind.CHANGED, "acc_1", "A1"),
        ("status.rich_details.details[0].violations[1].subject", DiffKind.CHANGED, "mv_2", "M2"),
    ]


def _refusal(said: str, *violations: tuple[str, str]) -> Outcome:
    """A refusal saying `said` in its status details and in its rich details' message, whose
    PreconditionFailure holds `violations` (subject, description)."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    failure = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type="T", subject=subject, description=description
            )
            for subject, description in violations
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(failure)
    status = status_pb2.Status(code=9, message=said, details=[detail])
    return Outcome(code=9, details=said, trailing_metadata=((STATUS_DETAILS, status.SerializeToString()),))


STATUS_DETAILS = "grpc-status-details-bin"
A1_M2 = (("account", "A1", "acc_1"), ("movement", "M2", "mv_2"))
CLOSED = "account A1 is closed"


def _rich(comparison: Comparison) -> list[tuple[str, DiffKind, object, object, str]]:
    return [(d.path, d.kind, d.bank, d.bk, d.rule) for d in comparison.differences]


def test_free_text_in_rich_error_details_reads_bk_s_ids_as_the_bank_ids_they_pair_with() -> None:
    """A refusal whose rich details are worded as Bank's but name BK's ids where Bank's name its own (their
    message, a violation's description) is the same refusal, as its status details are; the subject, an id
    location, is read through the pairs as before. Before, the rich message and the description were each a
    real mismatch blamed on BK: a BK with no bug failed the gate."""
    fields = custom_fields(*ACCOUNT_OR_MOVEMENT)
    bank = _refusal(CLOSED, ("A1", "account A1 closed by movement M2"))
    bk = _refusal("account acc_1 is closed", ("acc_1", "account acc_1 closed by movement mv_2"))
    same = compare(exchange(GET, bank, bk, ids=A1_M2), CUSTOM, None, fields)
    assert (same.verdict, same.differences) == (Verdict.MATCH, ())
    # BK naming another account, in other words, or naming an id of its own no pair knows: still differences
    other = _refusal("account acc_9 is closed", ("acc_1", "account acc_1 closed by movement mv_7"))
    pairs = (*A1_M2, ("account", "A9", "acc_9"))
    differs = compare(exchange(GET, bank, other, ids=pairs), CUSTOM, None, fields)
    assert differs.verdict is Verdict.MISMATCH
    description = "status.rich_details.details[0].violations[0].description"
    assert _rich(differs) == [
        ("status.details", DiffKind.STATUS, CLOSED, "account acc_9 is closed", ""),
        ("status.rich_details.message", DiffKind.CHANGED, CLOSED, "account acc_9 is closed", ""),
        (
            description,
            DiffKind.CHANGED,
            "account A1 closed by movement M2",
            "account acc_1 closed by movement mv_7",
            "",
        ),
    ]
    worded = _refusal("account acc_1 was closed", ("acc_1", "account acc_1 closed by movement mv_2"))
    assert _rich(compare(exchange(GET, bank, worded, ids=A1_M2), CUSTOM, None, fields)) == [
        ("status.details", DiffKind.STATUS, CLOSED, "account acc_1 was closed", ""),
        ("status.rich_details.message", DiffKind.CHANGED, CLOSED, "account acc_1 was closed", ""),
    ]
    # the subject is an id location: an id there no pair knows is an unmapped id, however it reads as text
    unmapped = _refusal("account acc_1 is closed", ("mv_7", "account acc_1 closed by movement mv_2"))
    assert _rich(compare(exchange(GET, bank, unmapped, ids=A1_M2), CUSTOM, None, fields)) == [
        ("status.rich_details.details[0].violations[0].subject", DiffKind.UNMAPPED_ID, "A1", "mv_7", ""),
    ]
    # equal texts are equal, as in the status details: BK's acc_1 read as A1 is not asked for where Bank's
    # own text is the same
    alike = _refusal("account acc_1 is closed", ("acc_1", "d"))
    assert (
        compare(
            exchange(GET, alike, alike, ids=(("account", "acc_1", "acc_1"),)), CUSTOM, None, fields
        ).verdict
        is Verdict.MATCH
    )


def test_the_status_rule_s_details_judge_the_rich_details_message_too() -> None:
    """The rich details' message is the status details' rich form: a `status` rule's `details` judges it
    as it judges them (ignored, or a pattern whose groups may capture paired ids). Before, `details =
    "ignore"` left the rich message a real mismatch."""
    fields = custom_fields(*ACCOUNT_OR_MOVEMENT)
    bank = _refusal(CLOSED, ("A1", "d"))
    ignore = [{"rule": "status", "details": "ignore", "name": "any words"}]
    ignored = compare(
        exchange(GET, bank, _refusal("no such account", ("acc_1", "d")), ids=A1_M2),
        CUSTOM,
        build_rules(ignore, CUSTOM, parse_duration),
        fields,
    )
    assert ignored.verdict is Verdict.MATCH
    assert [(d.path, d.rule) for d in ignored.differences] == [
        ("status.details", "any words"),
        ("status.rich_details.message", "any words"),
    ]
    wording = [{"rule": "status", "details": r"account '?(\w+)'? (?:is|was) closed", "name": "wording"}]
    rules = build_rules(wording, CUSTOM, parse_duration)
    paired = compare(
        exchange(GET, bank, _refusal("account 'acc_1' was closed", ("acc_1", "d")), ids=A1_M2),
        CUSTOM,
        rules,
        fields,
    )
    assert paired.verdict is Verdict.MATCH
    assert [(d.path, d.rule) for d in paired.differences] == [
        ("status.details", "wording"),
        ("status.rich_details.message", "wording"),
    ]
    another = _refusal("account 'acc_9' was closed", ("acc_1", "d"))
    pairs = (*A1_M2, ("account", "A9", "acc_9"))
    differs = compare(exchange(GET, bank, another, ids=pairs), CUSTOM, rules, fields)
    assert differs.verdict is Verdict.MISMATCH
    assert [(d.path, d.rule) for d in differs.differences] == [
        ("status.details", ""),
        ("status.rich_details.message", ""),
    ]


def test_an_owner_key_beside_an_id_minted_at_a_method_path_through_a_list() -> None:
    """An owner key declared beside an id that a method path mints through a repeated field is accepted,
    and each id found there takes the owner beside it."""
    fields = custom_fields(
        kind("leaf", f"{LIST}:response.leaves.id", owner_key=("idtest.v1.Leaf.owner",)),
    )
    holder = new("Holder", leaves=[new("Leaf", id="L1", owner="A"), new("Leaf", id="L2", owner="B")])
    assert [(f.value, f.owner) for f in fields.find(LIST, "response", [holder], None)] == [
        ("L1", "A"),
        ("L2", "B"),
    ]


# ---- one field reached by two declarations ---------------------------------------------------


def test_a_field_declared_on_its_type_and_reached_by_a_method_path_is_found_once() -> None:
    """`idtest.v1.Filter.ref` and `Svc/Get:request.filter.ref` name the same field: its id is found, and
    translated, once (before: twice, and the second pass saw the translated value and left it)."""
    fields = custom_fields(
        kind("leaf", "idtest.v1.Leaf.id", references=("idtest.v1.Filter.ref", f"{GET}:request.filter.ref"))
    )
    request = new("Req", filter=new("Filter", ref="L1"))
    assert fields.find(GET, "request", [request], None) == [
        Found("leaf", False, (0, "filter", "ref"), "L1", "")
    ]
    seen: list[str] = []
    left = fields.rewrite(
        GET, "request", [request], lambda f: seen.append(f.value) or {"L1": "X"}.get(f.value)
    )
    assert (left, seen, request.filter.ref) == ([], ["L1"], "X")  # type: ignore[attr-defined]


def test_a_minted_field_reached_again_by_a_minting_method_path_of_its_kind_is_found_once() -> None:
    """A type-level minted id and a method path minting the same field, same kind: one id, minted."""
    fields = custom_fields(
        kind("leaf", "idtest.v1.Leaf.id", f"{LIST}:response.one.id", owner_key=("idtest.v1.Leaf.owner",))
    )
    holder = new("Holder", one=new("Leaf", id="L1", owner="acc"), leaves=[new("Leaf", id="L2")])
    assert fields.find(LIST, "response", [holder], None) == [
        Found("leaf", True, (0, "leaves", 0, "id"), "L2", ""),
        Found("leaf", True, (0, "one", "id"), "L1", "acc"),
    ]


def test_a_request_path_naming_a_field_its_kind_mints_on_the_type_is_found_once() -> None:
    """In a request nothing is minted: a request path of the kind that mints the field on its type names
    the same id, found once."""
    fields = custom_fields(kind("ref", "idtest.v1.Filter.ref", references=(f"{GET}:request.filter.ref",)))
    request = new("Req", filter=new("Filter", ref="R1"))
    assert [(f.kind, f.value) for f in fields.find(GET, "request", [request], None)] == [("ref", "R1")]


def test_a_reference_field_a_method_path_of_another_kind_reaches_is_shared_there() -> None:
    """`account` references `Filter.ref` everywhere, `movement` references it on Get's requests: there the
    location is shared by both kinds (one id, either kind's map translates it), elsewhere `account` alone."""
    fields = custom_fields(
        kind("account", "idtest.v1.Leaf.id", references=("idtest.v1.Filter.ref",)),
        kind("movement", "idtest.v1.Inner.b", references=(f"{GET}:request.filter.ref",)),
    )
    request = new("Req", filter=new("Filter", ref="X"))
    (found,) = fields.find(GET, "request", [request], None)
    assert (found.kind, found.every_kind) == ("account", ("account", "movement"))
    (elsewhere,) = fields.find(LIST, "request", [request], None)
    assert elsewhere.every_kind == ("account",)
    assert fields.rewrite(GET, "request", [request], lambda f: "mv_1" if f.value == "X" else None) == []
    assert request.filter.ref == "mv_1"  # type: ignore[attr-defined]


TWICE_MISTAKES: list[Any] = [
    pytest.param(
        kind("leaf", "idtest.v1.Leaf.id", references=(f"{LIST[1:]}:response.one.id",)),
        f"ids.leaf.references[0]: '{LIST[1:]}:response.one.id' reaches idtest.v1.Leaf.id, which "
        "ids.leaf.minted[0] declares: a field of an answer mints ids of its kind or names them, not both",
        id="minted-on-the-type-referenced-on-a-path",
    ),
    pytest.param(
        kind("leaf", f"{LIST}:response.one.id", references=("idtest.v1.Leaf.id",)),
        "ids.leaf.references[0]: 'idtest.v1.Leaf.id' reaches idtest.v1.Leaf.id, which ids.leaf.minted[0] "
        "declares: a field of an answer mints ids of its kind or names them, not both",
        id="minted-on-a-path-referenced-on-the-type",
    ),
    pytest.param(
        (
            kind("leaf", "idtest.v1.Leaf.id"),
            kind("other", "idtest.v1.Inner.b", f"{LIST[1:]}:response.one.id"),
        ),
        f"ids.other.minted[1]: '{LIST[1:]}:response.one.id' reaches idtest.v1.Leaf.id, which "
        "ids.leaf.minted[0] declares: a location that mints ids holds one kind (several kinds may share a "
        "reference location)",
        id="minted-by-two-kinds",
    ),
    pytest.param(
        (
            kind("leaf", "idtest.v1.Leaf.id"),
            kind(
                "other",
                "idtest.v1.Inner.b",
                references=(f"{LIST}:request.filter.ref", f"{LIST[1:]}:response.one.id"),
            ),
        ),
        f"ids.other.references[1]: '{LIST[1:]}:response.one.id' reaches idtest.v1.Leaf.id, which "
        "ids.leaf.minted[0] declares: a location that mints ids holds one kind (several kinds may share a "
        "reference location)",
        id="minted-by-one-kind-referenced-by-another",
    ),
    pytest.param(
        kind("serial", f"{GET}:response.serial", f"{GET[1:]}:response.serial"),
        f"ids.serial.minted[1]: '{GET[1:]}:response.serial' is already declared by ids.serial.minted[0]",
        id="one-path-spelled-twice",
    ),
    pytest.param(
        (
            kind("serial", f"{GET}:response.serial"),
            kind("other", "idtest.v1.Leaf.id", f"{GET[1:]}:response.serial"),
        ),
        f"ids.other.minted[1]: '{GET[1:]}:response.serial' is already declared by ids.serial.minted[0]: a "
        "location that mints ids holds one kind (several kinds may share a reference location)",
        id="one-path-spelled-twice-by-two-kinds",
    ),
]


@pytest.mark.parametrize(("declared", "error"), TWICE_MISTAKES)
def test_a_field_two_declarations_reach_as_minted_and_otherwise_is_refused_in_one_line(
    declared: IdKind | tuple[IdKind, ...], error: str
) -> None:
    """A field one declaration mints and another reaches (on its type, on a method path, or the same path
    spelled with and without its leading slash) as a reference or as another kind's: one IdError naming
    both settings (before: accepted, and the id found twice, or silently made a reference)."""
    with pytest.raises(IdError) as caught:
        custom_fields(*(declared if isinstance(declared, tuple) else (declared,)))
    assert str(caught.value) == error


# ---- an owner beside a nested id, read from the answer ------------------------------------------


def test_a_nested_minted_id_reads_its_owner_from_the_answer_path() -> None:
    """`idtest.v1.Inner.b` minted inside Get's answer, owner `Svc/Get:response.token`: the owner is read
    from the answer, not from the message holding the id (before: AttributeError, so no pair was learned)."""
    fields = custom_fields(kind("item", "idtest.v1.Inner.b", owner_key=(f"{GET}:response.token",)))
    answers = [
        new("Resp", a=new("Inner", b="x"), items=[new("Inner", b="y")], token="t1"),
        new("Resp", token="t2"),
    ]
    assert [(f.path, f.value, f.owner) for f in fields.find(GET, "response", answers, None)] == [
        ((0, "a", "b"), "x", "t1"),
        ((0, "items", 0, "b"), "y", "t1"),
    ]


def test_an_answer_side_owner_is_not_read_from_other_messages() -> None:
    """The messages of a google.rpc.Status (side "") are not the method's answer: an id minted in its
    details has no owner from the answer path (before: AttributeError)."""
    from google.protobuf import any_pb2
    from google.rpc import status_pb2

    fields = custom_fields(kind("item", "idtest.v1.Inner.b", owner_key=(f"{GET}:response.token",)))
    detail = any_pb2.Any()
    detail.Pack(new("Inner", b="x"))
    status = status_pb2.Status(code=9, details=[detail])
    assert [(f.value, f.owner) for f in fields.find(GET, "", [status], None)] == [("x", "")]


def test_a_text_rule_judges_free_text_once_bk_s_ids_in_it_are_read_as_bank_s() -> None:
    """A `string` rule (case and spacing aside) on a text naming BK's id where Bank's names its own: the rule
    judges BK's text once each BK id of the exchange's pairs in it is read as Bank's, so "x1 IS NOT OPEN"
    is Bank's "L1 is not open", tolerated by the rule. Before, neither alone held it the same (the rule saw
    two ids, the reading two wordings): a real mismatch on every such answer of a BK with no bug. Naming
    another thing is still real; so is a text at an id location."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id"))
    pairs = (("leaf", "L1", "x1"), ("leaf", "L2", "x2"))
    rules = build_rules([{"path": "idtest.v1.Leaf.owner", "rule": "string"}], CUSTOM, parse_duration)

    def differences(owner: str) -> list[tuple[str, object, object, str]]:
        bank = answer(new("Holder", one=new("Leaf", id="L1", owner="L1 is not open")))
        bk = answer(new("Holder", one=new("Leaf", id="x1", owner=owner)))
        found = compare(exchange(LIST, bank, bk, ids=pairs), CUSTOM, rules, fields)
        return [(d.path, d.bank, d.bk, d.rule) for d in found.differences]

    name = rules.bindings[0].rule.name
    assert name.startswith("string")
    assert differences("x1 IS  NOT OPEN") == [("one.owner", "L1 is not open", "x1 IS  NOT OPEN", name)]
    assert differences("x2 IS NOT OPEN") == [("one.owner", "L1 is not open", "x2 IS NOT OPEN", "")]
    assert differences("x1 is closed") == [("one.owner", "L1 is not open", "x1 is closed", "")]
    # the ids are compared exactly, the rule folding case or not: Bank's l1 is another leaf than its L1
    lower = (("leaf", "L1", "x1"), ("leaf", "l1", "y7"))
    bank = answer(new("Holder", one=new("Leaf", id="l1", owner="l1 is not open")))
    bk = answer(new("Holder", one=new("Leaf", id="y7", owner="x1 is not open")))
    found = compare(exchange(LIST, bank, bk, ids=lower), CUSTOM, rules, fields).differences
    assert [(d.path, d.rule) for d in found] == [("one.owner", "")]


def test_free_text_in_answer_messages_reads_bk_s_ids_as_the_bank_ids_they_pair_with() -> None:
    """An answer's text field worded as Bank's but naming BK's id where Bank's names its own (a rejection's
    reason, "L1 is not open"), as rich error details are read: no difference. Before, a real mismatch on
    every such answer, blamed on a BK with no bug. BK naming another thing, or wording it otherwise, is still
    a difference; an id of digits alone is left as it is (a count could read as one by chance)."""
    fields = custom_fields(kind("leaf", "idtest.v1.Leaf.id"))
    pairs = (("leaf", "L1", "x1"), ("leaf", "L2", "x2"), ("leaf", "7", "9"))

    def holder(leaf: str, owner: str, *tags: str) -> Outcome:
        return answer(new("Holder", one=new("Leaf", id=leaf, owner=owner, tags=tags)))

    def differences(bk: Outcome, bank: Outcome | None = None) -> list[tuple[str, object, object]]:
        bank = bank or holder("L1", "L1 is not open", "held by L1")
        found = compare(exchange(LIST, bank, bk, ids=pairs), CUSTOM, None, fields)
        return [(d.path, d.bank, d.bk) for d in found.real_differences]

    assert differences(holder("x1", "x1 is not open", "held by x1")) == []
    assert differences(holder("x1", "x2 is not open", "held by x1")) == [
        ("one.owner", "L1 is not open", "x2 is not open")
    ]
    assert differences(holder("x1", "x1 is closed", "held by x1")) == [
        ("one.owner", "L1 is not open", "x1 is closed")
    ]
    assert differences(holder("x1", "9 left", "held by x1"), holder("L1", "7 left", "held by L1")) == [
        ("one.owner", "7 left", "9 left")
    ]
