"""compare(): the verdict on one exchange, and the differences it lists, with readable paths."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from comparators import Comparison, DiffKind, Exchange, Outcome, Verdict, build_rules, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.units import parse_duration
from tests.comparators._exchanges import (
    BAD_PRICE,
    BAD_QUANTITY,
    BOOK_TRADES,
    GET_BALANCE,
    GET_PORTFOLIO,
    INVALID_ARGUMENT,
    NOT_FOUND,
    OK,
    OPEN_ACCOUNT,
    POST_TRADE,
    REGISTRY,
    SETTLE_TRADES,
    STREAM_ENTRIES,
    TRADE_SESSION,
    UNAVAILABLE,
    UNDESCRIBED,
    answer,
    exchange,
    rich_status,
    trailers,
)
from tests.comparators._probe import PROBE_REGISTRY, READ, reading
from tests.comparators.test_ids import sample_fields

Row = tuple[str, DiffKind, object, object]


def _rows(comparison: Comparison) -> list[Row]:
    return [(d.path, d.kind, d.bank, d.bk) for d in comparison.differences]


def _position(symbol: str, quantity: str, **fields: str) -> pb.Position:
    return pb.Position(symbol=symbol, quantity=quantity, **fields)


def _entry(sequence: int, amount: str) -> pb.LedgerEntry:
    return pb.LedgerEntry(sequence=sequence, account_id="A1", kind=pb.ENTRY_KIND_DEPOSIT, amount=amount)


# ---- answers that match ---------------------------------------------------------------


def test_byte_identical_answers_match_without_decoding() -> None:
    """Identical bytes are a match at once, even bytes no descriptor could decode."""
    same = answer(b"\xff\xff\xff", code=OK)
    comparison = compare(exchange(GET_BALANCE, same, same), REGISTRY)
    assert comparison.verdict is Verdict.MATCH
    assert comparison.differences == ()
    assert comparison.decoded is False


def test_latency_transport_metadata_and_bks_own_keys_do_not_count() -> None:
    """Latency is not part of the answer; nor are what gRPC and proxies add (`date`, `server`, `x-envoy-*`),
    keys only BK sends (a client does not read what Bank never sent), and whether a key came as a header or
    a trailer (an answer that is only a status carries its headers as trailers)."""
    bank = answer(
        pb.Balance(cash="1"),
        latency=0.5,
        initial_metadata=(
            ("x-next-page", "2"),
            ("date", "Sun, 06 Dec 2026 17:40:00 GMT"),
            ("server", "bank"),
            ("alt-svc", 'h3=":443"'),
            ("strict-transport-security", "max-age=31536000"),
        ),
    )
    bk = answer(
        pb.Balance(cash="1"),
        latency=0.01,
        trailing_metadata=(
            ("x-next-page", "2"),
            ("x-bk-build", "7"),
            ("x-envoy-upstream-service-time", "3"),
        ),
    )
    comparison = compare(exchange(GET_BALANCE, bank, bk), REGISTRY)
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())


def test_metadata_bank_sends_is_compared_key_by_key() -> None:
    """A key Bank sends that BK leaves out, or sends with another value, is a difference a client would
    notice: it is real, at `metadata.KEY`, even where the messages are byte for byte the same."""
    bank = answer(pb.Balance(cash="1"), initial_metadata=(("x-next-page", "2"), ("etag", "v1")))
    bk = answer(pb.Balance(cash="1"), initial_metadata=(("x-next-page", "3"),))
    comparison = compare(exchange(GET_BALANCE, bank, bk), REGISTRY)
    assert comparison.verdict is Verdict.MISMATCH
    assert sorted((d.path, d.kind, d.bank, d.bk, d.rule) for d in comparison.differences) == [
        ("metadata.etag", DiffKind.REMOVED, "v1", None, ""),
        ("metadata.x-next-page", DiffKind.CHANGED, "2", "3", ""),
    ]
    several = answer(
        pb.Balance(cash="1"), trailing_metadata=(("x-tag", "a"), ("x-tag", "b"), ("x-raw-bin", b"\x01"))
    )
    fewer = answer(pb.Balance(cash="1"), trailing_metadata=(("x-tag", "a"), ("x-raw-bin", b"\x02")))
    assert sorted(
        (d.path, d.bank, d.bk) for d in compare(exchange(GET_BALANCE, several, fewer), REGISTRY).differences
    ) == [
        ("metadata.x-raw-bin", b"\x01", b"\x02"),
        ("metadata.x-tag", ["a", "b"], "a"),
    ]


def test_metadata_rules_tolerate_a_keys_difference() -> None:
    """`metadata = "GLOB"` rules: `ignore` tolerates a key left out or changed, a value rule a value it
    accepts; a rule on a field never reaches metadata, nor a metadata rule a field."""
    rules = build_rules(
        [
            {"metadata": "x-next-*", "rule": "ignore", "name": "cursor"},
            {"metadata": "etag", "rule": "string", "name": "etag case"},
            {"regex": ".*", "rule": "ignore", "methods": ["bank.v1.Ledger/ListAccounts"]},
        ],
        REGISTRY,
        parse_duration,
    )
    bank = answer(
        pb.Balance(cash="1"), initial_metadata=(("x-next-page", "2"), ("etag", "ABC"), ("x-id", "1"))
    )
    bk = answer(pb.Balance(cash="1"), initial_metadata=(("etag", "abc"), ("x-id", "2")))
    comparison = compare(exchange(GET_BALANCE, bank, bk), REGISTRY, rules)
    assert comparison.verdict is Verdict.MISMATCH
    assert sorted((d.path, d.rule) for d in comparison.differences) == [
        ("metadata.etag", "etag case"),
        ("metadata.x-id", ""),
        ("metadata.x-next-page", "cursor"),
    ]
    listing = compare(exchange("/bank.v1.Ledger/ListAccounts", bank, bk), REGISTRY, rules)
    assert [d.path for d in listing.differences if not d.rule] == ["metadata.x-id"]


# LedgerEntry, StreamLedgerEntries' answer: 1 sequence (int64), 3 kind (enum), 4 amount (string)
@pytest.mark.parametrize(
    ("bank_bytes", "bk_bytes"),
    [
        pytest.param(b"", b"\x22\x00", id="explicit-empty-string-equals-unset"),
        pytest.param(b"", b"\x18\x00", id="explicit-zero-enum-equals-unset"),
        pytest.param(b"", b"\x08\x00", id="explicit-zero-int64-equals-unset"),
        pytest.param(b"\x18\x01\x22\x013", b"\x22\x013\x18\x01", id="field-order-on-the-wire"),
        pytest.param(b"\x22\x013", b"\x22\x019\x22\x013", id="last-value-of-a-field-sent-twice-wins"),
    ],
)
def test_semantically_equal_bytes_match(bank_bytes: bytes, bk_bytes: bytes) -> None:
    """Answers that differ in bytes but not in meaning (proto3 defaults, field order) match once decoded."""
    comparison = compare(exchange(STREAM_ENTRIES, answer(bank_bytes), answer(bk_bytes)), REGISTRY)
    assert (comparison.verdict, comparison.differences, comparison.decoded) == (Verdict.MATCH, (), True)


# ---- field-level differences ----------------------------------------------------------

FIELD_CASES: list[Any] = [
    pytest.param(
        GET_PORTFOLIO,
        pb.Portfolio(account_id="A1", positions=[_position("AAPL", "10"), _position("MSFT", "5")]),
        pb.Portfolio(account_id="A1", positions=[_position("AAPL", "10"), _position("MSFT", "6")]),
        [("positions[1].quantity", DiffKind.CHANGED, "5", "6")],
        id="repeated-nested-scalar-changed",
    ),
    pytest.param(
        GET_PORTFOLIO,
        pb.Portfolio(positions=[_position("AAPL", "10")]),
        pb.Portfolio(positions=[_position("AAPL", "10"), _position("MSFT", "5")]),
        [("positions[1]", DiffKind.ADDED, None, {"symbol": "MSFT", "quantity": "5"})],
        id="repeated-item-added",
    ),
    pytest.param(
        GET_PORTFOLIO,
        pb.Portfolio(positions=[_position("AAPL", "10"), _position("MSFT", "5")]),
        pb.Portfolio(positions=[_position("AAPL", "10")]),
        [("positions[1]", DiffKind.REMOVED, {"symbol": "MSFT", "quantity": "5"}, None)],
        id="repeated-item-removed",
    ),
    pytest.param(
        GET_PORTFOLIO,
        pb.Portfolio(positions=[_position("AAPL", "10")]),
        pb.Portfolio(positions=[_position("AAPL", "10", cost_basis="100")]),
        [("positions[0].cost_basis", DiffKind.ADDED, None, "100")],
        id="nested-field-added",
    ),
    pytest.param(
        SETTLE_TRADES,
        pb.SettlementReport(settled_trade_ids=["T1", "T2"], settled_count=2),
        pb.SettlementReport(settled_trade_ids=["T1", "T3"], settled_count=2),
        [("settled_trade_ids[1]", DiffKind.CHANGED, "T2", "T3")],
        id="repeated-string-changed",
    ),
    pytest.param(
        POST_TRADE,
        pb.Trade(trade_id="T1", fee="0.01"),
        pb.Trade(trade_id="T1", fee="0.01", venue="XNYS"),
        [("venue", DiffKind.ADDED, None, "XNYS")],
        id="field-added",
    ),
    pytest.param(
        POST_TRADE,
        pb.Trade(trade_id="T1", fee="0.01", venue="XNYS"),
        pb.Trade(trade_id="T1", fee="0.01"),
        [("venue", DiffKind.REMOVED, "XNYS", None)],
        id="field-removed",
    ),
    pytest.param(
        POST_TRADE,
        pb.Trade(symbol="AAPL", fee="0.01"),
        pb.Trade(venue="XNYS"),
        [
            ("symbol", DiffKind.REMOVED, "AAPL", None),
            ("fee", DiffKind.REMOVED, "0.01", None),
            ("venue", DiffKind.ADDED, None, "XNYS"),
        ],
        id="no-field-in-common-still-field-by-field-in-declaration-order",
    ),
    pytest.param(
        POST_TRADE,
        pb.Trade(side=pb.SIDE_BUY),
        pb.Trade(side=pb.SIDE_SELL),
        [("side", DiffKind.CHANGED, "SIDE_BUY", "SIDE_SELL")],
        id="enum-by-name",
    ),
    pytest.param(
        POST_TRADE,
        pb.Trade(side=pb.SIDE_BUY),
        pb.Trade(side=7),  # type: ignore[arg-type]
        [("side", DiffKind.CHANGED, "SIDE_BUY", 7)],
        id="enum-number-unknown-to-the-descriptor",
    ),
    pytest.param(
        POST_TRADE,
        pb.Trade(trade_id="T1"),
        pb.Trade(trade_id="T1", side=pb.SIDE_SELL),
        [("side", DiffKind.ADDED, None, "SIDE_SELL")],
        id="enum-on-one-side-by-name",
    ),
    pytest.param(
        SETTLE_TRADES,
        pb.SettlementReport(settled_trade_ids=["T1", "T2"]),
        pb.SettlementReport(),
        [("settled_trade_ids", DiffKind.REMOVED, ["T1", "T2"], None)],
        id="repeated-field-on-one-side-as-a-list",
    ),
    pytest.param(
        GET_PORTFOLIO,
        pb.Portfolio(account_id="A1"),
        pb.Portfolio(account_id="A1", positions=[_position("AAPL", "10")]),
        [("positions", DiffKind.ADDED, None, [{"symbol": "AAPL", "quantity": "10"}])],
        id="repeated-messages-on-one-side-as-a-list-of-dicts",
    ),
    pytest.param(
        GET_BALANCE,
        pb.Balance(cash="1"),
        pb.Balance(cash="1", as_of=timestamp_pb2.Timestamp(seconds=10)),
        [("as_of", DiffKind.ADDED, None, "1970-01-01T00:00:10Z")],
        id="timestamp-on-one-side-as-text",
    ),
    pytest.param(
        GET_BALANCE,
        pb.Balance(cash="1", as_of=timestamp_pb2.Timestamp(seconds=10)),
        pb.Balance(cash="1", as_of=timestamp_pb2.Timestamp(seconds=11, nanos=500_000_000)),
        [("as_of", DiffKind.CHANGED, "1970-01-01T00:00:10Z", "1970-01-01T00:00:11.500Z")],
        id="timestamp-as-text",
    ),
    pytest.param(
        GET_BALANCE,
        pb.Balance(cash="1", as_of=timestamp_pb2.Timestamp(seconds=2**40)),
        pb.Balance(cash="2", as_of=timestamp_pb2.Timestamp(seconds=2**40)),
        [("cash", DiffKind.CHANGED, "1", "2")],
        id="timestamp-out-of-text-range-still-compared",
    ),
    pytest.param(
        GET_BALANCE,
        pb.Balance(cash="1", as_of=timestamp_pb2.Timestamp(seconds=2**40)),
        pb.Balance(cash="1", as_of=timestamp_pb2.Timestamp(seconds=2**40 + 1)),
        [("as_of", DiffKind.CHANGED, "1099511627776s+0ns", "1099511627777s+0ns")],
        id="timestamp-out-of-text-range-as-seconds-and-nanos",
    ),
]


@pytest.mark.parametrize(("method", "bank_message", "bk_message", "expected"), FIELD_CASES)
def test_field_differences_have_readable_paths(
    method: str, bank_message: Any, bk_message: Any, expected: list[Row]
) -> None:
    """Each differing field is one difference whose path reads like the field's access path."""
    comparison = compare(exchange(method, answer(bank_message), answer(bk_message)), REGISTRY)
    assert comparison.verdict is Verdict.MISMATCH
    assert comparison.decoded is True
    assert _rows(comparison) == expected


def test_differences_hold_plain_values_that_pickle() -> None:
    """Values in differences are plain Python (lists, dicts, str), never protobuf containers, so a
    comparison crosses processes and serialises as it is."""
    bank = answer(pb.Portfolio(positions=[_position("AAPL", "10")]))
    comparison = compare(exchange(GET_PORTFOLIO, bank, answer(pb.Portfolio(account_id="A1"))), REGISTRY)
    assert pickle.loads(pickle.dumps(comparison.differences)) == comparison.differences
    assert [type(d.bank) for d in comparison.differences] == [type(None), list]


NAN = float("nan")


ONE, TWO = {"k": "1"}, {"k": "2"}  # a difference beside the NaNs, so that the messages are walked
LABEL_CHANGED = [("labels[k]", DiffKind.CHANGED, "1", "2")]

PROBE_CASES: list[Any] = [
    pytest.param(
        reading(rate=NAN, labels=ONE), reading(rate=NAN, labels=TWO), LABEL_CHANGED, id="nan-equals-nan"
    ),
    pytest.param(
        reading(samples=[1.0, NAN], labels=ONE),
        reading(samples=[1.0, NAN], labels=TWO),
        LABEL_CHANGED,
        id="nan-in-a-list",
    ),
    pytest.param(
        reading(wrapped={"value": NAN}, labels=ONE),
        reading(wrapped={"value": NAN}, labels=TWO),
        LABEL_CHANGED,
        id="nan-wrapped",
    ),
    pytest.param(b"", b"\x09" + bytes(8), [], id="explicit-zero-double-equals-unset"),
    pytest.param(
        reading(labels={"__x": "1", "b": "2"}),
        reading(labels={"__x": "2", "c": "3"}),
        [
            ("labels[__x]", DiffKind.CHANGED, "1", "2"),
            ("labels[b]", DiffKind.REMOVED, "2", None),
            ("labels[c]", DiffKind.ADDED, None, "3"),
        ],
        id="map-by-key-even-dunder-keys",
    ),
    pytest.param(
        reading(labels={"a": "1"}),
        reading(),
        [("labels", DiffKind.REMOVED, {"a": "1"}, None)],
        id="map-as-dict",
    ),
    pytest.param(
        reading(levels=[1]),
        reading(levels=[2, 1]),
        [
            ("levels[0]", DiffKind.CHANGED, "LEVEL_LOW", "LEVEL_HIGH"),
            ("levels[1]", DiffKind.ADDED, None, "LEVEL_LOW"),
        ],
        id="repeated-enum-by-name",
    ),
    pytest.param(
        reading(),
        reading(levels=[1]),
        [("levels", DiffKind.ADDED, None, ["LEVEL_LOW"])],
        id="repeated-enum-added",
    ),
    pytest.param(
        reading(wrapped={"value": 1.0}),
        reading(wrapped={"value": 2.0}),
        [("wrapped", DiffKind.CHANGED, 1.0, 2.0)],
        id="wrapper-as-its-value",
    ),
    pytest.param(
        reading(), reading(wrapped={}), [("wrapped", DiffKind.ADDED, None, 0.0)], id="wrapper-presence-kept"
    ),
    pytest.param(
        reading(), reading(note=""), [("note", DiffKind.ADDED, None, "")], id="optional-presence-kept"
    ),
]


@pytest.mark.parametrize(("bank_message", "bk_message", "expected"), PROBE_CASES)
def test_normalisation_of_numbers_maps_wrappers_and_enums(
    bank_message: Any, bk_message: Any, expected: list[Row]
) -> None:
    """Doubles (NaN equals NaN, an explicit 0 equals unset), maps by key, wrappers by value, enums by
    name, and explicit presence (`optional`, wrappers) kept."""
    comparison = compare(exchange(READ, answer(bank_message), answer(bk_message)), PROBE_REGISTRY)
    assert comparison.decoded is True
    assert _rows(comparison) == expected
    assert comparison.verdict is (Verdict.MISMATCH if expected else Verdict.MATCH)


@pytest.mark.parametrize(
    ("bank_tail", "bk_tail", "expected"),
    [
        pytest.param(
            b"", b"\xf8\x06\x07", [("#111", DiffKind.UNKNOWN_FIELD, None, 7)], id="unknown-varint-added"
        ),
        pytest.param(
            b"\xf8\x06\x07", b"", [("#111", DiffKind.UNKNOWN_FIELD, 7, None)], id="unknown-varint-removed"
        ),
        pytest.param(
            b"\xfa\x06\x02hi",
            b"\xfa\x06\x02ho",
            [("#111", DiffKind.UNKNOWN_FIELD, b"hi", b"ho")],
            id="unknown-bytes",
        ),
        pytest.param(
            b"\xf8\x06\x01\xf8\x06\x02",
            b"\xf8\x06\x02",
            [("#111", DiffKind.UNKNOWN_FIELD, [1, 2], 2)],
            id="repeated-unknown-number-keeps-every-value",
        ),
        pytest.param(
            b"\xfb\x06\x08\x05\xfc\x06",
            b"\xfb\x06\x08\x06\xfc\x06",
            [("#111.#1", DiffKind.UNKNOWN_FIELD, 5, 6)],
            id="unknown-group-field-by-field",
        ),
        pytest.param(
            b"\xf8\x06\x07\xf0\x06\x01",
            b"\xf0\x06\x02\xf8\x06\x07",
            [("#110", DiffKind.UNKNOWN_FIELD, 1, 2)],
            id="only-the-differing-number",
        ),
    ],
)
def test_unknown_fields_are_kept_under_their_number(
    bank_tail: bytes, bk_tail: bytes, expected: list[Row]
) -> None:
    """Fields the descriptor does not know are `unknown-field` differences at "#<number>", never dropped;
    inside an unknown group, field by field ("#111.#1")."""
    known = pb.Trade(trade_id="T1").SerializeToString()
    comparison = compare(exchange(POST_TRADE, answer(known + bank_tail), answer(known + bk_tail)), REGISTRY)
    assert _rows(comparison) == expected


def test_unknown_group_equal_on_both_sides_is_no_difference() -> None:
    """An unknown group that is the same on both sides is not reported when another field differs."""
    group = b"\xfb\x06\x08\x05\xfc\x06"
    bank = answer(pb.Trade(trade_id="T1").SerializeToString() + group)
    bk = answer(pb.Trade(trade_id="T2").SerializeToString() + group)
    assert _rows(compare(exchange(POST_TRADE, bank, bk), REGISTRY)) == [
        ("trade_id", DiffKind.CHANGED, "T1", "T2")
    ]


def test_oneof_switch_reports_the_member_removed_and_the_one_added() -> None:
    """A oneof answered with another member reads as that member removed and the other added."""
    bank = answer(pb.TradeSessionEvent(booked=pb.Trade(trade_id="T1")))
    bk = answer(pb.TradeSessionEvent(rejected=pb.Rejection(code="NOT_FOUND")))
    assert _rows(compare(exchange(TRADE_SESSION, bank, bk), REGISTRY)) == [
        ("[0].booked", DiffKind.REMOVED, {"trade_id": "T1"}, None),
        ("[0].rejected", DiffKind.ADDED, None, {"code": "NOT_FOUND"}),
    ]


def test_differences_are_oriented_bank_then_bk_whichever_side_is_primary() -> None:
    """With BK as the primary, `bank` still holds Bank's value (the shadow's) and `bk` BK's."""
    bank, bk = answer(pb.Trade(fee="0.01")), answer(pb.Trade(fee="0"))
    comparison = compare(exchange(POST_TRADE, bk, bank, primary_is_bank=False), REGISTRY)
    assert _rows(comparison) == [("fee", DiffKind.CHANGED, "0.01", "0")]


# ---- status ---------------------------------------------------------------------------

STATUS_CASES: list[Any] = [
    pytest.param(
        answer(code=NOT_FOUND, details="account 'X' not found"),
        answer(code=INVALID_ARGUMENT, details="account 'X' not found"),
        [("status.code", DiffKind.STATUS, "NOT_FOUND", "INVALID_ARGUMENT")],
        id="code",
    ),
    pytest.param(
        answer(code=NOT_FOUND, details="account 'X' not found"),
        answer(code=NOT_FOUND, details="no account X"),
        [("status.details", DiffKind.STATUS, "account 'X' not found", "no account X")],
        id="details",
    ),
    pytest.param(
        answer(code=NOT_FOUND),
        answer(code=42),
        [("status.code", DiffKind.STATUS, "NOT_FOUND", "CODE_42")],
        id="code-outside-the-known-range",
    ),
    pytest.param(
        answer(pb.Account(account_id="A1")),
        answer(code=INVALID_ARGUMENT, details="bad"),
        [
            ("status.code", DiffKind.STATUS, "OK", "INVALID_ARGUMENT"),
            ("status.details", DiffKind.STATUS, "", "bad"),
            ("<messages>", DiffKind.MESSAGE_COUNT, 1, 0),
        ],
        id="answer-against-error",
    ),
]


@pytest.mark.parametrize(("bank", "bk", "expected"), STATUS_CASES)
def test_status_differences(bank: Outcome, bk: Outcome, expected: list[Row]) -> None:
    """Status code (by name) and details are compared, as is whether an answer came at all."""
    comparison = compare(exchange(OPEN_ACCOUNT, bank, bk), REGISTRY)
    assert comparison.verdict is Verdict.MISMATCH
    assert _rows(comparison) == expected


def test_same_rich_details_with_other_trailers_differ_there_alone() -> None:
    """Equal google.rpc.Status trailers match; another trailer that differs is a metadata difference, not
    one of the rich details."""
    bank = answer(
        code=INVALID_ARGUMENT, details="bad order", trailing_metadata=trailers(BAD_QUANTITY, ("x", "1"))
    )
    bk = answer(
        code=INVALID_ARGUMENT, details="bad order", trailing_metadata=trailers(BAD_QUANTITY, ("x", "2"))
    )
    comparison = compare(exchange(POST_TRADE, bank, bk), REGISTRY)
    assert [(d.path, d.bank, d.bk) for d in comparison.differences] == [("metadata.x", "1", "2")]
    same = answer(
        code=INVALID_ARGUMENT, details="bad order", trailing_metadata=trailers(BAD_QUANTITY, ("x", "1"))
    )
    assert compare(exchange(POST_TRADE, bank, same), REGISTRY).verdict is Verdict.MATCH


def _decoded_status(value: object, field: str) -> None:
    """`value` is a google.rpc.Status as plain values, with its BadRequest detail still packed."""
    assert isinstance(value, dict)
    assert (value["code"], value["message"]) == (INVALID_ARGUMENT, "bad order")
    [detail] = value["details"]
    assert detail["type_url"] == "type.googleapis.com/google.rpc.BadRequest"
    assert field.encode() in detail["value"]


RICH_PATH = "status.rich_details.details[0].field_violations[0]"


def _packed_bad_quantity() -> dict[str, object]:
    """BAD_QUANTITY's one detail as a difference shows a whole Any: its type URL and packed bytes."""
    violation = error_details_pb2.BadRequest.FieldViolation(field="quantity", description="must be > 0")
    packed = error_details_pb2.BadRequest(field_violations=[violation]).SerializeToString()
    return {"type_url": "type.googleapis.com/google.rpc.BadRequest", "value": packed}


@pytest.mark.parametrize(
    ("bank_rich", "bk_rich", "expected"),
    [
        pytest.param(
            BAD_QUANTITY,
            BAD_PRICE,
            [(f"{RICH_PATH}.field", DiffKind.CHANGED, "quantity", "price")],
            id="different-violation-field-by-field",
        ),
        pytest.param(
            rich_status(INVALID_ARGUMENT, "bad order", ("quantity", "must be > 0")),
            rich_status(INVALID_ARGUMENT, "no good", ("quantity", "positive, please")),
            [
                ("status.rich_details.message", DiffKind.CHANGED, "bad order", "no good"),
                (f"{RICH_PATH}.description", DiffKind.CHANGED, "must be > 0", "positive, please"),
            ],
            id="message-and-description-in-declaration-order",
        ),
        pytest.param(
            BAD_QUANTITY,
            rich_status(INVALID_ARGUMENT, "bad order", ("quantity", "must be > 0"), ("price", "must be > 0")),
            [
                (
                    "status.rich_details.details[0].field_violations[1]",
                    DiffKind.ADDED,
                    None,
                    {"field": "price", "description": "must be > 0"},
                )
            ],
            id="violation-added",
        ),
        pytest.param(
            BAD_QUANTITY,
            rich_status(INVALID_ARGUMENT, "bad order"),
            [("status.rich_details.details", DiffKind.REMOVED, [_packed_bad_quantity()], None)],
            id="details-list-removed",
        ),
        pytest.param(
            BAD_QUANTITY,
            b"\xff\xff",
            [("status.rich_details", DiffKind.UNDECODABLE, None, "ffff")],
            id="undecodable-as-hex",
        ),
    ],
)
def test_rich_status_details_are_compared_field_by_field(
    bank_rich: bytes, bk_rich: bytes, expected: list[tuple[str, DiffKind, object, object]]
) -> None:
    """Two grpc-status-details-bin trailers are decoded as google.rpc.Status, their Any details unpacked,
    and compared field by field under `status.rich_details`; bytes that do not decode are `undecodable`."""
    bank = answer(code=INVALID_ARGUMENT, details="bad order", trailing_metadata=trailers(bank_rich))
    bk = answer(code=INVALID_ARGUMENT, details="bad order", trailing_metadata=trailers(bk_rich))
    comparison = compare(exchange(POST_TRADE, bank, bk), REGISTRY)
    undecodable = any(kind is DiffKind.UNDECODABLE for _, kind, *_ in expected)
    assert comparison.verdict is (Verdict.ERROR if undecodable else Verdict.MISMATCH)
    assert _rows(comparison) == expected


@pytest.mark.parametrize(
    ("bank_rich", "bk_rich", "kind"),
    [
        pytest.param(BAD_QUANTITY, None, DiffKind.REMOVED, id="only-bank-sends-details"),
        pytest.param(None, BAD_QUANTITY, DiffKind.ADDED, id="only-bk-sends-details"),
    ],
)
def test_rich_status_details_on_one_side_only(
    bank_rich: bytes | None, bk_rich: bytes | None, kind: DiffKind
) -> None:
    """Rich details sent by one side only are one `status.rich_details` difference, added or removed,
    holding the decoded google.rpc.Status."""
    bank = answer(code=INVALID_ARGUMENT, details="bad order", trailing_metadata=trailers(bank_rich))
    bk = answer(code=INVALID_ARGUMENT, details="bad order", trailing_metadata=trailers(bk_rich))
    comparison = compare(exchange(POST_TRADE, bank, bk), REGISTRY)
    assert comparison.verdict is Verdict.MISMATCH
    [difference] = comparison.differences
    assert (difference.path, difference.kind) == ("status.rich_details", kind)
    sent, missing = (
        (difference.bank, difference.bk) if kind is DiffKind.REMOVED else (difference.bk, difference.bank)
    )
    assert missing is None
    _decoded_status(sent, "quantity")


# ---- streams and message counts -------------------------------------------------------


def _entry_value(sequence: int, amount: str) -> dict[str, object]:
    return {"sequence": sequence, "account_id": "A1", "kind": "ENTRY_KIND_DEPOSIT", "amount": amount}


def test_server_stream_differences_are_indexed_by_message() -> None:
    """In a server stream each path starts with the message's index; an extra message is an added element."""
    bank = answer(_entry(1, "100"), _entry(2, "-5"))
    bk = answer(_entry(1, "100"), _entry(2, "-4"), _entry(3, "1"))
    assert _rows(compare(exchange(STREAM_ENTRIES, bank, bk), REGISTRY)) == [
        ("[1].amount", DiffKind.CHANGED, "-5", "-4"),
        ("[2]", DiffKind.ADDED, None, _entry_value(3, "1")),
    ]


def test_server_stream_missing_messages_are_removed_elements() -> None:
    """Messages Bank sent beyond BK's last are removed elements at their index, one each."""
    bank = answer(_entry(1, "1"), _entry(2, "2"), _entry(3, "3"))
    bk = answer(_entry(1, "1"))
    assert _rows(compare(exchange(STREAM_ENTRIES, bank, bk), REGISTRY)) == [
        ("[1]", DiffKind.REMOVED, _entry_value(2, "2"), None),
        ("[2]", DiffKind.REMOVED, _entry_value(3, "3"), None),
    ]


def test_server_stream_of_one_message_is_still_indexed() -> None:
    """A server stream that sent one message still gets `[0]` paths: the descriptor says it is a stream."""
    comparison = compare(exchange(STREAM_ENTRIES, answer(_entry(1, "1")), answer(_entry(1, "2"))), REGISTRY)
    assert _rows(comparison) == [("[0].amount", DiffKind.CHANGED, "1", "2")]


def test_client_stream_answer_has_plain_paths() -> None:
    """A client-streaming method answers once, so its paths carry no index."""
    bank = answer(pb.BookTradesSummary(booked=2, total_fees="0.02"))
    bk = answer(pb.BookTradesSummary(booked=2, total_fees="0.01"))
    assert _rows(compare(exchange(BOOK_TRADES, bank, bk), REGISTRY)) == [
        ("total_fees", DiffKind.CHANGED, "0.02", "0.01")
    ]


def test_empty_stream_against_a_stream_is_added_elements() -> None:
    """No message at all against some messages: each of those messages is an added element."""
    comparison = compare(exchange(STREAM_ENTRIES, answer(), answer(_entry(1, "1"))), REGISTRY)
    assert _rows(comparison) == [("[0]", DiffKind.ADDED, None, _entry_value(1, "1"))]


# ---- bytes the comparator cannot decode -----------------------------------------------

GOOD = pb.Trade(trade_id="T1").SerializeToString()


@pytest.mark.parametrize(
    ("bank_bytes", "bk_bytes", "expected"),
    [
        pytest.param(
            GOOD, b"\xff\xff", [("<message>", DiffKind.UNDECODABLE, None, "ffff")], id="bk-undecodable"
        ),
        pytest.param(
            b"\x0a\x05ab", GOOD, [("<message>", DiffKind.UNDECODABLE, "0a056162", None)], id="bank-truncated"
        ),
        pytest.param(
            b"\x0a\x02\xff\xfe",
            b"\x0a",
            [("<message>", DiffKind.UNDECODABLE, "0a02fffe", "0a")],
            id="both-undecodable-one-difference-with-both-hex-values",
        ),
        pytest.param(
            GOOD,
            b"\xff" * 100,
            [("<message>", DiffKind.UNDECODABLE, None, "ff" * 64)],
            id="hex-of-the-first-64-bytes",
        ),
    ],
)
def test_undecodable_bytes_are_an_error_with_their_difference(
    bank_bytes: bytes, bk_bytes: bytes, expected: list[Row]
) -> None:
    """Bytes that do not parse as the method's output type make the comparison an `error` (it could not be
    made: never a pass, never tainted), with one `undecodable` difference holding their hex (None for a
    side that decoded) and a reason naming the side."""
    comparison = compare(
        exchange(POST_TRADE, answer(bank_bytes), answer(bk_bytes), tainted="key 'A' out of step"), REGISTRY
    )
    assert comparison.verdict is Verdict.ERROR
    assert _rows(comparison) == expected
    sides = [side for side, value in (("Bank's", expected[0][2]), ("BK's", expected[0][3])) if value]
    assert comparison.reason == f"{' and '.join(sides)} answer does not decode (<message>)"


def test_undecodable_message_in_a_stream_is_indexed() -> None:
    """An undecodable message in a server stream is reported at its index; the rest pair by position."""
    bank = answer(_entry(1, "1"), _entry(2, "2"))
    bk = answer(b"\xff", _entry(2, "3"))
    assert _rows(compare(exchange(STREAM_ENTRIES, bank, bk), REGISTRY)) == [
        ("[0]", DiffKind.UNDECODABLE, None, "ff"),
        ("[1].amount", DiffKind.CHANGED, "2", "3"),
    ]


@pytest.mark.parametrize(
    ("method", "registry", "bank", "bk", "expected"),
    [
        pytest.param(
            UNDESCRIBED, REGISTRY, (b"a",), (b"b",), [("<message>", DiffKind.BYTES, b"a", b"b")], id="unknown"
        ),
        pytest.param(
            POST_TRADE, None, (b"a",), (b"b",), [("<message>", DiffKind.BYTES, b"a", b"b")], id="no-registry"
        ),
        pytest.param(
            UNDESCRIBED,
            REGISTRY,
            (b"a", b"same", b"c"),
            (b"a", b"same", b"d"),
            [("[2]", DiffKind.BYTES, b"c", b"d")],
            id="several-messages-indexed",
        ),
        pytest.param(
            UNDESCRIBED,
            None,
            (b"a",),
            (b"a", b"b"),
            [("<messages>", DiffKind.MESSAGE_COUNT, 1, 2)],
            id="count",
        ),
    ],
)
def test_methods_without_descriptors_compare_raw_bytes(
    method: str, registry: Any, bank: tuple[bytes, ...], bk: tuple[bytes, ...], expected: list[Row]
) -> None:
    """With no descriptor for the method, answers are compared as bytes (kind `bytes`), not decoded."""
    comparison = compare(exchange(method, answer(*bank), answer(*bk)), registry)
    assert comparison.verdict is Verdict.MISMATCH
    assert comparison.decoded is False
    assert _rows(comparison) == expected


# ---- exchanges that are not compared --------------------------------------------------

BALANCE = answer(pb.Balance(cash="1"))
OTHER_BALANCE = answer(pb.Balance(cash="2"))


@pytest.mark.parametrize(
    ("exchange_", "verdict", "reason"),
    [
        pytest.param(
            exchange(GET_BALANCE, BALANCE, answer(code=4, local="shadow timeout after 2s")),
            Verdict.SHADOW_ERROR,
            "shadow timeout after 2s",
            id="shadow-local-outcome",
        ),
        pytest.param(
            exchange(GET_BALANCE, BALANCE, answer(code=UNAVAILABLE, details="connection refused")),
            Verdict.SHADOW_ERROR,
            "shadow unavailable: connection refused",
            id="shadow-unavailable",
        ),
        pytest.param(
            exchange(GET_BALANCE, BALANCE, answer(code=UNAVAILABLE), primary_is_bank=False),
            Verdict.SHADOW_ERROR,
            "shadow unavailable: ",
            id="bank-as-shadow-unavailable",
        ),
        pytest.param(
            exchange(POST_TRADE, BALANCE, OTHER_BALANCE, cancelled=True, is_write=True),
            Verdict.SKIPPED,
            "cancelled by the client; write: whether either side applied it is unknown",
            id="cancelled-write",
        ),
        pytest.param(
            exchange(GET_BALANCE, BALANCE, OTHER_BALANCE, cancelled=True, is_write=False),
            Verdict.SKIPPED,
            "cancelled by the client",
            id="cancelled-read",
        ),
        pytest.param(
            exchange(
                POST_TRADE,
                answer(code=1, local="not compared: its copy was lost (Envoy closed its stream to the shim)"),
                None,
                cancelled=True,
                is_write=True,
            ),
            Verdict.SKIPPED,
            "not compared: its copy was lost (Envoy closed its stream to the shim); write: whether either "
            "side applied it is unknown",
            id="copy-lost-before-the-primary-answered",
        ),
        pytest.param(
            exchange(POST_TRADE, BALANCE, None, cancelled=True),
            Verdict.SKIPPED,
            "cancelled by the client; write: whether either side applied it is unknown",
            id="cancelled-before-mirroring",
        ),
        pytest.param(
            exchange(GET_BALANCE, BALANCE, None, note="too large to compare"),
            Verdict.SKIPPED,
            "too large to compare",
            id="not-mirrored-with-note",
        ),
        pytest.param(
            exchange(GET_BALANCE, BALANCE, None), Verdict.SKIPPED, "not mirrored", id="not-mirrored"
        ),
    ],
)
def test_exchanges_that_are_not_compared(exchange_: Exchange, verdict: Verdict, reason: str) -> None:
    """Shadow failures and unusable exchanges get a verdict and a reason, and no differences."""
    comparison = compare(exchange_, REGISTRY)
    assert (comparison.verdict, comparison.reason, comparison.differences) == (verdict, reason, ())


@pytest.mark.parametrize("primary_is_bank", [True, False])
def test_a_primary_that_never_received_the_call_leaves_nothing_to_compare(primary_is_bank: bool) -> None:
    """UNAVAILABLE before any answer: the primary never received the call (gRPC's meaning), so whatever
    the shadow answered, there is nothing to compare it with. Not a match when both are down (no
    evidence of parity), not a difference of the shadow's when only the primary is (no fault of its)."""
    down = answer(code=UNAVAILABLE, details="failed to connect to all addresses; 10.0.0.1:443")
    for shadow in (down, answer(code=UNAVAILABLE, details="10.0.0.2:443: connection refused"), BALANCE):
        comparison = compare(exchange(GET_BALANCE, down, shadow, primary_is_bank=primary_is_bank), REGISTRY)
        assert (comparison.verdict, comparison.differences) == (Verdict.SKIPPED, ())
        assert comparison.reason == (
            "not compared: the primary never received the call (UNAVAILABLE before any answer:"
            " failed to connect to all addresses; 10.0.0.1:443)"
        )


# what grpc and Envoy say of a connection lost once the call was sent on it: the side may have carried it out
LOST_MIDWAY = (
    "Stream removed (Socket closed)",
    "recvmsg:Connection reset by peer",
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
    "Cancelling all calls",
)
# ... and of a call that never left, or that the side itself refused as unavailable
NEVER_SENT = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused",
    "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure,"
    " transport failure reason: delayed connect error: Connection refused",
    "no healthy upstream",
    "busy: try again later",
)


def test_a_primary_that_lost_its_connection_once_it_had_the_call_may_have_applied_it() -> None:
    """UNAVAILABLE before any answer in the words of a connection lost once the call was sent on it: the
    primary had the call. Still nothing to compare (skipped), but the reason says so, and of a write that
    the primary may have applied it (the shim then mirrors it and marks its keys out of step). A call that
    never left, or that the side refused itself, is still one the primary never received."""
    for said in LOST_MIDWAY:
        lost = answer(code=UNAVAILABLE, details=said)
        assert (lost.unavailable_before_answering, lost.never_received) == (True, False), said
        write = compare(exchange(POST_TRADE, lost, answer(pb.Trade(trade_id="T1"))), REGISTRY)
        assert (write.verdict, write.differences) == (Verdict.SKIPPED, ())
        assert write.reason == (
            f"not compared: the primary's connection was lost once it had the call (UNAVAILABLE before any"
            f" answer: {said}); write: it may have applied it"
        )
        read = compare(exchange(GET_BALANCE, lost, BALANCE, is_write=False), REGISTRY)
        assert read.reason.endswith(f"(UNAVAILABLE before any answer: {said})"), read.reason
    for said in NEVER_SENT:
        down = answer(code=UNAVAILABLE, details=said)
        assert down.never_received, said
        assert compare(exchange(POST_TRADE, down, None), REGISTRY).verdict is Verdict.SKIPPED
    assert not answer(pb.Balance(cash="1"), code=UNAVAILABLE, details="busy").never_received  # it answered


def test_unavailable_after_an_answer_is_compared() -> None:
    """A stream that ended UNAVAILABLE after answer messages was received: both sides' answers compare. A
    difference is BK's; the same cut on both sides is two broken calls, no agreement."""
    cut = answer(pb.Balance(cash="1"), code=UNAVAILABLE, details="reset")
    both = compare(exchange(GET_BALANCE, cut, cut), REGISTRY)
    assert (both.verdict, both.reason) == (Verdict.SKIPPED, "both sides failed (UNAVAILABLE): proves nothing")
    assert compare(exchange(GET_BALANCE, cut, BALANCE), REGISTRY).verdict is Verdict.MISMATCH


# a status that is no refusal: the call broke, and may or may not have been carried out
FAILURES = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "DEADLINE_EXCEEDED": 4,
    "INTERNAL": 13,
    "DATA_LOSS": 15,
    "CODE_42": 42,
}
# a refusal: the call was certainly not carried out, and both sides refusing alike is agreement
REFUSALS = {
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "UNAUTHENTICATED": 16,
}


@pytest.mark.parametrize("name", FAILURES)
@pytest.mark.parametrize("is_write", [True, False], ids=["write", "read"])
@pytest.mark.parametrize("primary_is_bank", [True, False], ids=["bank-primary", "bk-primary"])
def test_both_sides_failing_alike_is_no_match(name: str, is_write: bool, primary_is_bank: bool) -> None:
    """Bank and BK answering the same failure (not a refusal) sent by their servers is no agreement: both
    broke, so the call proves nothing of BK's parity. It is skipped, never a match, and never tainted (not
    even on a key out of step)."""
    failed = answer(code=FAILURES[name], details="boom")
    ex = exchange(
        POST_TRADE, failed, failed, is_write=is_write, primary_is_bank=primary_is_bank, tainted="an old write"
    )
    comparison = compare(ex, REGISTRY)
    assert (comparison.verdict, comparison.reason, comparison.differences) == (
        Verdict.SKIPPED,
        f"both sides failed ({name}): proves nothing",
        (),
    )


def test_both_sides_failing_alike_under_a_rule_is_no_match() -> None:
    """Failures a status rule holds equivalent (the codes, the wording) are still two failures: skipped,
    naming each side's code."""
    rules = build_rules(
        [{"rule": "status", "equivalent": [["INTERNAL", "UNKNOWN"]], "details": "ignore", "name": "codes"}],
        REGISTRY,
        parse_duration,
    )
    bank, bk = answer(code=13, details="stack A"), answer(code=2, details="stack B")
    for primary_is_bank in (True, False):
        primary, shadow = (bank, bk) if primary_is_bank else (bk, bank)
        comparison = compare(
            exchange(POST_TRADE, primary, shadow, primary_is_bank=primary_is_bank), REGISTRY, rules
        )
        assert (comparison.verdict, comparison.reason, comparison.differences) == (
            Verdict.SKIPPED,
            "both sides failed (Bank INTERNAL, BK UNKNOWN): proves nothing",
            (),
        )
    same = compare(exchange(POST_TRADE, bank, answer(code=13, details="stack B")), REGISTRY, rules)
    assert (same.verdict, same.reason) == (Verdict.SKIPPED, "both sides failed (INTERNAL): proves nothing")


@pytest.mark.parametrize("name", ["INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "DATA_LOSS"])
def test_both_sides_failing_alike_in_their_own_words_is_no_mismatch(name: str) -> None:
    """Two servers word a failure their own way (a stack, a timeout's figure, rich details of their own):
    the same failure code on both sides is skipped as proving nothing, whatever the words, never a real
    mismatch blamed on BK. Answers that differ before both failed still do; so do two failures of different
    codes."""
    rich = trailers(rich_status(FAILURES[name], "db timeout", ("pool", "exhausted")))
    bank = answer(code=FAILURES[name], details="db timeout after 5003 ms", trailing_metadata=rich)
    bk = answer(code=FAILURES[name], details="upstream connect error: reset")
    for primary_is_bank in (True, False):
        primary, shadow = (bank, bk) if primary_is_bank else (bk, bank)
        worded = compare(exchange(GET_BALANCE, primary, shadow, primary_is_bank=primary_is_bank), REGISTRY)
        assert (worded.verdict, worded.reason, worded.differences) == (
            Verdict.SKIPPED,
            f"both sides failed ({name}): proves nothing",
            (),
        )
    answered = compare(
        exchange(
            GET_BALANCE,
            answer(pb.Balance(account_id="A1", cash="1"), code=FAILURES[name], details="a"),
            answer(pb.Balance(account_id="A1", cash="2"), code=FAILURES[name], details="b"),
        ),
        REGISTRY,
    )
    assert answered.verdict is Verdict.MISMATCH
    assert [d.path for d in answered.differences] == ["cash"]
    other = "UNKNOWN" if name != "UNKNOWN" else "INTERNAL"
    apart = compare(exchange(GET_BALANCE, bank, answer(code=FAILURES[other], details="b")), REGISTRY)
    assert apart.verdict is Verdict.MISMATCH
    assert apart.differences[0].path == "status.code"


@pytest.mark.parametrize("name", REFUSALS)
def test_both_sides_refusing_alike_is_a_match(name: str) -> None:
    """A refusal says the call was certainly not carried out: the same refusal on both sides is parity."""
    refused = answer(code=REFUSALS[name], details="no")
    assert compare(exchange(POST_TRADE, refused, refused), REGISTRY).verdict is Verdict.MATCH


@pytest.mark.parametrize(
    ("bank", "bk", "expected"),
    [
        pytest.param(
            answer(code=13), BALANCE, ("status.code", "INTERNAL", "OK"), id="bank-failed-bk-answered"
        ),
        pytest.param(
            BALANCE, answer(code=13), ("status.code", "OK", "INTERNAL"), id="bk-failed-bank-answered"
        ),
        pytest.param(
            answer(code=13), answer(code=2), ("status.code", "INTERNAL", "UNKNOWN"), id="other-failure"
        ),
        pytest.param(
            answer(code=NOT_FOUND),
            answer(code=13),
            ("status.code", "NOT_FOUND", "INTERNAL"),
            id="refused-failed",
        ),
    ],
)
def test_failures_that_differ_are_a_mismatch(
    bank: Outcome, bk: Outcome, expected: tuple[str, str, str]
) -> None:
    """Where the two sides' failures differ in their codes (or one side failed and the other answered), the
    difference is real: a mismatch, as any other. (The same failure in other words proves nothing:
    `test_both_sides_failing_alike_in_their_own_words_is_no_mismatch`.)"""
    comparison = compare(exchange(GET_BALANCE, bank, bk), REGISTRY)
    assert comparison.verdict is Verdict.MISMATCH
    assert expected in [(d.path, d.bank, d.bk) for d in comparison.differences]


def test_comparison_exposes_its_exchange() -> None:
    """A comparison names its method and lists its differences as real (no rule tolerated them)."""
    ex = exchange(GET_BALANCE, BALANCE, OTHER_BALANCE)
    comparison = compare(ex, REGISTRY)
    assert (comparison.exchange, comparison.method) == (ex, GET_BALANCE)
    assert comparison.real_differences == comparison.differences
    assert [d.rule for d in comparison.differences] == [""]


def test_metadata_bank_itself_varies_is_noise() -> None:
    """Bank asked again for the same read sends another value of a header (a request id of its own): a
    noise difference, which says how Bank differs from itself."""
    first = answer(pb.Balance(cash="1"), initial_metadata=(("x-served-by", "bank-1"),))
    again = answer(pb.Balance(cash="1"), initial_metadata=(("x-served-by", "bank-2"),))
    bk = answer(pb.Balance(cash="1"), initial_metadata=(("x-served-by", "bank-1"),))
    asked = Exchange(GET_BALANCE, (b"",), first, bk, secondary=again)
    comparison = compare(asked, REGISTRY)
    assert comparison.verdict is Verdict.MATCH
    assert [(d.path, d.bank, d.bk, d.noise) for d in comparison.noise] == [
        ("metadata.x-served-by", "bank-1", "bank-2", True)
    ]


def test_metadata_that_may_carry_credentials_is_compared_by_presence_and_never_shown() -> None:
    """Each side sets its own session cookie: no difference. BK setting none is one, but the value Bank
    sent is not shown (nor stored, nor written to the diff log)."""
    bank = answer(
        pb.Balance(cash="1"), initial_metadata=(("set-cookie", "s=bank-secret"), ("x-session-token", "t1"))
    )
    bk = answer(pb.Balance(cash="1"), initial_metadata=(("set-cookie", "s=bk-secret"),))
    comparison = compare(exchange(GET_BALANCE, bank, bk), REGISTRY)
    assert [(d.path, d.kind, d.bank, d.bk) for d in comparison.differences] == [
        ("metadata.x-session-token", DiffKind.REMOVED, "<not shown: the key may carry credentials>", None)
    ]
    assert "secret" not in repr(comparison.differences)
    assert "t1" not in repr(comparison.differences)


def test_bks_ids_in_metadata_read_as_the_bank_ids_they_pair_with() -> None:
    """A header naming what the call made (`location`) names BK's trade on BK's side: read through the
    exchange's pairs it is Bank's, as in status details; an id that pairs with another is a difference."""
    bank = answer(pb.Balance(cash="1"), initial_metadata=(("location", "/trades/T5"),))
    bk = answer(pb.Balance(cash="1"), initial_metadata=(("location", "/trades/trd_9"),))
    paired = exchange(GET_BALANCE, bank, bk, ids=(("trade", "T5", "trd_9"),))
    assert compare(paired, REGISTRY, ids=sample_fields()).differences == ()
    other = exchange(GET_BALANCE, bank, bk, ids=(("trade", "T6", "trd_9"),))
    assert [d.path for d in compare(other, REGISTRY, ids=sample_fields()).differences] == [
        "metadata.location"
    ]
