"""Every comparator rule, through compare(): real encoded answers, rules built from specs as TOML gives them.

Each row is (rule specs, method, Bank's answer, BK's answer, the differences expected as
(path, kind, Bank's value, BK's value, name of the rule that tolerated it or "")). The
verdict follows: a match exactly when every difference is tolerated.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.protobuf import message, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from comparators import (
    LATE_MARGIN,
    Comparison,
    DescriptorRegistry,
    DiffKind,
    Outcome,
    RuleError,
    Verdict,
    build_rules,
    compare,
)
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.store.key_order import NOT_LATE, Late, bands, late_of, most
from shim.units import parse_duration
from tests.comparators._exchanges import (
    BAD_PRICE,
    BAD_QUANTITY,
    GET_BALANCE,
    GET_PORTFOLIO,
    INVALID_ARGUMENT,
    LEDGER,
    NOT_FOUND,
    OPEN_ACCOUNT,
    POST_TRADE,
    REGISTRY,
    SETTLE_TRADES,
    STREAM_ENTRIES,
    TRADE_SESSION,
    answer,
    exchange,
    rich_status,
    trailers,
)
from tests.comparators._probe import PROBE_REGISTRY, READ, reading, stamp

Row = tuple[str, DiffKind, object, object, str]
Answer = message.Message | tuple[message.Message, ...] | Outcome
Spec = dict[str, Any]

CANCEL_TRADE = LEDGER + "CancelTrade"
GET_ACCOUNT = LEDGER + "GetAccount"
LIST_TRADES = LEDGER + "ListTrades"
CHANGED, ADDED, REMOVED, STATUS = DiffKind.CHANGED, DiffKind.ADDED, DiffKind.REMOVED, DiffKind.STATUS
UNDECODABLE = DiffKind.UNDECODABLE
OK, PERMISSION_DENIED = 0, 7


def _outcome(value: Answer) -> Outcome:
    if isinstance(value, Outcome):
        return value
    if isinstance(value, tuple):
        return answer(*value)
    return answer(value)


def judge(
    specs: list[Spec], method: str, bank: Answer, bk: Answer, registry: DescriptorRegistry = REGISTRY
) -> Comparison:
    """Bank's and BK's answers compared under the rules the specs describe."""
    rules = build_rules(specs, registry, parse_duration)
    return compare(exchange(method, _outcome(bank), _outcome(bk)), registry, rules)


def rows(comparison: Comparison) -> list[Row]:
    return [(d.path, d.kind, d.bank, d.bk, d.rule) for d in comparison.differences]


def check(
    specs: list[Spec],
    method: str,
    bank: Answer,
    bk: Answer,
    expected: list[Row],
    registry: DescriptorRegistry = REGISTRY,
) -> None:
    comparison = judge(specs, method, bank, bk, registry)
    assert rows(comparison) == expected
    tolerated = all(row[4] for row in expected)
    assert comparison.verdict is (Verdict.MATCH if tolerated else Verdict.MISMATCH)


COLUMNS = ("specs", "method", "bank", "bk", "expected")


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def _positions(*symbols: str, quantity: str = "1") -> pb.Portfolio:
    return pb.Portfolio(
        account_id="A1", positions=[pb.Position(symbol=s, quantity=quantity) for s in symbols]
    )


def _entry(sequence: int, amount: str) -> pb.LedgerEntry:
    return pb.LedgerEntry(sequence=sequence, kind=pb.ENTRY_KIND_TRADE, amount=amount)


# ---- ignore ---------------------------------------------------------------------------

IGNORE_CASES: list[Any] = [
    pytest.param(
        [{"path": "bank.v1.Trade.trade_id", "rule": "ignore", "name": "ids"}],
        POST_TRADE,
        pb.Trade(trade_id="T00000001", fee="1"),
        pb.Trade(trade_id="trd_3f9a0c12be47", fee="1"),
        [("trade_id", CHANGED, "T00000001", "trd_3f9a0c12be47", "ids")],
        id="exact-path",
    ),
    pytest.param(
        [{"path": "*.next_page_token", "rule": "ignore", "name": "tokens"}],
        LIST_TRADES,
        pb.ListTradesResponse(next_page_token="50"),
        pb.ListTradesResponse(next_page_token="QTAwMDE="),
        [("next_page_token", CHANGED, "50", "QTAwMDE=", "tokens")],
        id="glob-path",
    ),
    pytest.param(
        [{"regex": r"bank\.v1\.(Trade|LedgerEntry)\.trade_id", "rule": "ignore", "name": "ids"}],
        STREAM_ENTRIES,
        pb.LedgerEntry(sequence=1, trade_id="T1"),
        pb.LedgerEntry(sequence=1, trade_id="trd_1"),
        [("[0].trade_id", CHANGED, "T1", "trd_1", "ids")],
        id="regex-path",
    ),
    pytest.param(
        [{"regex": r"bank\.v1\.\w+\.fee", "rule": "ignore", "name": "fees"}],
        LEDGER + "BookTrades",
        pb.BookTradesSummary(total_fees="0.03"),
        pb.BookTradesSummary(total_fees="0.02"),
        [("total_fees", CHANGED, "0.03", "0.02", "")],
        id="regex-matches-the-whole-target-only",
    ),
    pytest.param(
        [{"path": "bank.v1.TradeSessionEvent.booked", "rule": "ignore", "name": "booking"}],
        TRADE_SESSION,
        pb.TradeSessionEvent(booked=pb.Trade(fee="0.01", price="10")),
        pb.TradeSessionEvent(booked=pb.Trade(fee="0", price="11", venue="XNYS")),
        [
            (
                "[0].booked",
                CHANGED,
                {"price": "10", "fee": "0.01"},
                {"price": "11", "fee": "0", "venue": "XNYS"},
                "booking",
            )
        ],
        id="a-message-field-ignores-its-subtree-as-one-difference",
    ),
    pytest.param(
        [{"path": "bank.v1.TradeSessionEvent.booked", "rule": "ignore", "name": "booking"}],
        TRADE_SESSION,
        pb.TradeSessionEvent(booked=pb.Trade(fee="0.01")),
        pb.TradeSessionEvent(rejected=pb.Rejection(code="NOT_FOUND")),
        [
            ("[0].booked", REMOVED, {"fee": "0.01"}, None, "booking"),
            ("[0].rejected", ADDED, None, {"code": "NOT_FOUND"}, ""),
        ],
        id="an-ignored-subtree-may-be-missing-but-not-its-sibling",
    ),
    pytest.param(
        [{"path": "bank.v1.Position.*", "rule": "ignore", "name": "position"}],
        GET_PORTFOLIO,
        pb.Portfolio(account_id="A1", positions=[pb.Position(symbol="AAPL", quantity="1")]),
        pb.Portfolio(account_id="A2", positions=[pb.Position(symbol="KO", cost_basis="3")]),
        [
            ("account_id", CHANGED, "A1", "A2", ""),
            ("positions[0].symbol", CHANGED, "AAPL", "KO", "position"),
            ("positions[0].quantity", REMOVED, "1", None, "position"),
            ("positions[0].cost_basis", ADDED, None, "3", "position"),
        ],
        id="glob-over-every-field-of-a-message",
    ),
    pytest.param(
        [{"path": "bank.v1.SettlementReport.settled_trade_ids", "rule": "ignore", "name": "ids"}],
        SETTLE_TRADES,
        pb.SettlementReport(settled_trade_ids=["T1", "T2"], settled_count=2),
        pb.SettlementReport(settled_trade_ids=["trd_2"], settled_count=2),
        [("settled_trade_ids", CHANGED, ["T1", "T2"], ["trd_2"], "ids")],
        id="a-repeated-field-as-a-whole",
    ),
]


@pytest.mark.parametrize(COLUMNS, IGNORE_CASES)
def test_ignore(specs: list[Spec], method: str, bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`ignore` tolerates every difference at the fields its path or regex names, a message field as one
    difference for its whole subtree, and nothing elsewhere."""
    check(specs, method, bank, bk, expected)


# ---- decimal --------------------------------------------------------------------------

DECIMAL = {"regex": r"bank\.v1\.\w+\.(quantity|price|fee|notional)", "rule": "decimal", "name": "decimal"}
CENTS = {"path": "bank.v1.Trade.price", "rule": "decimal", "scale": 2, "name": "cents"}


def _price(bank: str, bk: str, expected: str, specs: Spec = DECIMAL) -> Any:
    """A PostTrade whose prices differ as `bank` and `bk`; `expected` the rule that tolerates it (or "")."""
    return pytest.param(
        [specs],
        POST_TRADE,
        pb.Trade(trade_id="T1", price=bank),
        pb.Trade(trade_id="T1", price=bk),
        [("price", CHANGED, bank, bk, expected)],
        id=f"{bank}-vs-{bk}" + ("-with-scale" if specs is CENTS else ""),
    )


DECIMAL_CASES: list[Any] = [
    _price("100.50", "100.5", "decimal"),
    _price("1005.00", "1005", "decimal"),
    _price("0.0000", "0", "decimal"),
    _price("-0", "0", "decimal"),
    _price("1e2", "100", "decimal"),  # equal as decimals: the exponent is a way of writing, not a value
    _price("100.5", "100.51", ""),
    _price("1.00000000000000001", "1", ""),  # equal as floats, never as decimals
    _price("abc", "ABC", ""),
    _price("NaN", "nan", ""),
    _price("Infinity", "inf", ""),
    _price("1,5", "1.5", ""),
    _price("1000", "+1000", "decimal"),
    _price("1000", "1E3", "decimal"),
    _price("1000", "1e+3", "decimal"),
    # only a plain decimal: ASCII digits, an optional sign, fraction and exponent; anything else is text
    _price("1000", "1_000", ""),
    _price("1000", "1000\n", ""),
    _price("1000", "\t1000", ""),
    _price("1000", " 1000", ""),
    _price("1000", "1000 ", ""),
    _price("1000", "\uff11\uff10\uff10\uff10", ""),  # fullwidth digits
    _price("1000", "\u0661\u0660\u0660\u0660", ""),  # Arabic-Indic digits
    _price("1000", "1000.", ""),
    _price("0.5", ".5", ""),
    _price("1000", "1e3.0", ""),
    _price("100.50", "100.5\n", "", CENTS),
    _price("100.50", " 100.5", "", CENTS),
    _price("100.50", "100.5", "cents", CENTS),
    _price("1.005", "1.0050", "", CENTS),  # more decimals than the scale allows: never equal
    _price("1.000", "1", "", CENTS),
    pytest.param(
        [DECIMAL],
        POST_TRADE,
        pb.Trade(trade_id="T1", fee="0.00"),
        pb.Trade(trade_id="T1"),
        [("fee", REMOVED, "0.00", None, "decimal")],
        id="zero-against-unset-empty-string",
    ),
    pytest.param(
        [DECIMAL],
        POST_TRADE,
        pb.Trade(trade_id="T1"),
        pb.Trade(trade_id="T1", fee="0.01"),
        [("fee", ADDED, None, "0.01", "")],
        id="non-zero-against-unset",
    ),
    pytest.param(
        [DECIMAL],
        POST_TRADE,
        pb.Trade(quantity="10", price="100.50", fee="0.05", notional="1005.00"),
        pb.Trade(quantity="10.0", price="100.5", fee="0.05", notional="1005"),
        [
            ("quantity", CHANGED, "10", "10.0", "decimal"),
            ("price", CHANGED, "100.50", "100.5", "decimal"),
            ("notional", CHANGED, "1005.00", "1005", "decimal"),
        ],
        id="each-field-its-own-difference",
    ),
]


@pytest.mark.parametrize(COLUMNS, DECIMAL_CASES)
def test_decimal(specs: list[Spec], method: str, bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`decimal` tolerates decimal strings equal as numbers (unset counting as 0) written with at most
    `scale` decimals; non-numbers, NaN and infinities never; values stay the strings sent."""
    check(specs, method, bank, bk, expected)


CASH = {"path": "probe.v1.Reading.cash", "rule": "decimal", "name": "money"}
# a rule naming only a message that is not money could never tolerate anything, and is refused at start
# (`decimal-on-a-message-that-is-not-money`): this one also names a money message
PRICE = {"regex": r"probe\.v1\.Reading\.(price|fee)", "rule": "decimal", "name": "money"}
FEE = {"path": "probe.v1.Reading.fee", "rule": "decimal", "name": "money"}

MONEY_CASES: list[Any] = [
    pytest.param(
        [CASH],
        reading(cash={"currency": "USD", "units": 1, "nanos": 500_000_000}),
        reading(cash={"currency": "USD", "units": 1, "nanos": 510_000_000}),
        [("cash", CHANGED, "USD 1.500000000", "USD 1.510000000", "")],
        id="units-and-nanos-compare-as-one-amount",
    ),
    pytest.param(
        [CASH],
        reading(cash={"currency": "USD", "units": 1}),
        reading(cash={"currency": "EUR", "units": 1}),
        [("cash", CHANGED, "USD 1.000000000", "EUR 1.000000000", "")],
        id="another-currency-is-never-equal",
    ),
    pytest.param(
        [FEE],
        reading(fee={"value": "1.5", "currency_code": "USD"}),
        reading(fee={"value": "1.50", "currency_code": "USD"}),
        [("fee", CHANGED, "USD 1.5", "USD 1.50", "money")],
        id="a-decimal-string-and-its-currency",
    ),
    pytest.param(
        [FEE],
        reading(fee={"value": "1.5", "currency_code": "USD"}),
        reading(fee={"value": "1.5", "currency_code": "EUR"}),
        [("fee", CHANGED, "USD 1.5", "EUR 1.5", "")],
        id="the-same-amount-in-another-currency",
    ),
    pytest.param(
        [FEE],
        reading(fee={"value": "1.5", "currency_code": "USD"}),
        reading(fee={"value": " 1.5", "currency_code": "USD"}),
        [("fee", CHANGED, "USD 1.5", "USD  1.5", "")],
        id="an-amount-that-is-not-a-plain-decimal",
    ),
    pytest.param(
        [FEE],
        reading(fee={"value": "0.00", "currency_code": "USD"}),
        reading(fee={"currency_code": "USD"}),
        [("fee", CHANGED, "USD 0.00", "USD ", "money")],
        id="an-unset-amount-is-zero",
    ),
    pytest.param(
        [PRICE],
        reading(price={"amount": "1.5", "currency": "USD", "lots": 10, "as_of": stamp(1000)}),
        reading(price={"amount": "1.5", "currency": "USD", "lots": 99, "as_of": stamp(2000)}),
        [
            ("price.lots", CHANGED, 10, 99, ""),
            ("price.as_of", CHANGED, "1970-01-01T00:16:40Z", "1970-01-01T00:33:20Z", ""),
        ],
        id="other-fields-beside-the-amount-are-compared",
    ),
    pytest.param(
        [PRICE],
        reading(price={"amount": "1.5", "lots": 10}),
        reading(price={"amount": "1.50", "lots": 10}),
        [("price.amount", CHANGED, "1.5", "1.50", "")],
        id="a-message-with-other-fields-is-not-money",
    ),
]


@pytest.mark.parametrize(("specs", "bank", "bk", "expected"), MONEY_CASES)
def test_decimal_on_money_messages(specs: list[Spec], bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`decimal` on a message field compares a money message (nothing but its amount, units + nanos or one
    decimal string, and an optional currency) as one "<currency> <amount>"; a message with any other field
    is walked field by field, so no difference in its other fields is hidden."""
    check(specs, READ, bank, bk, expected, PROBE_REGISTRY)


# ---- number (doubles) -----------------------------------------------------------------

RATE = {"path": "probe.v1.Reading.rate", "rule": "number", "absolute": 0.01, "name": "rate"}
RELATIVE = {"path": "probe.v1.Reading.rate", "rule": "number", "relative": 1e-6, "name": "rate"}

NUMBER_CASES: list[Any] = [
    pytest.param(
        [RATE],
        reading(rate=1.0),
        reading(rate=1.005),
        [("rate", CHANGED, 1.0, 1.005, "rate")],
        id="within-absolute",
    ),
    pytest.param(
        [RATE],
        reading(rate=1.0),
        reading(rate=1.02),
        [("rate", CHANGED, 1.0, 1.02, "")],
        id="beyond-absolute",
    ),
    pytest.param(
        [RATE], reading(), reading(rate=0.005), [("rate", ADDED, None, 0.005, "rate")], id="unset-is-zero"
    ),
    pytest.param(
        [RELATIVE],
        reading(rate=1e9),
        reading(rate=1e9 + 100),
        [("rate", CHANGED, 1e9, 1e9 + 100, "rate")],
        id="within-relative",
    ),
    pytest.param(
        [RELATIVE],
        reading(rate=1.0),
        reading(rate=1.00001),
        [("rate", CHANGED, 1.0, 1.00001, "")],
        id="beyond-relative",
    ),
    pytest.param(
        [RATE],
        reading(rate=float("inf")),
        reading(rate=1.0),
        [("rate", CHANGED, float("inf"), 1.0, "")],
        id="infinity",
    ),
    pytest.param(
        [{"path": "probe.v1.Reading.samples", "rule": "number", "absolute": 0.01, "name": "samples"}],
        reading(samples=[1.0, 2.0]),
        reading(samples=[1.001, 2.0]),
        [("samples[0]", CHANGED, 1.0, 1.001, "samples")],
        id="list-element",
    ),
    pytest.param(
        [{"path": "probe.v1.Reading.wrapped", "rule": "number", "absolute": 0.01, "name": "wrapped"}],
        reading(wrapped={"value": 1.0}),
        reading(wrapped={"value": 1.004}),
        [("wrapped", CHANGED, 1.0, 1.004, "wrapped")],
        id="wrapper-value",
    ),
    pytest.param(
        [{"path": "probe.v1.Reading.wrapped", "rule": "number", "absolute": 0.01, "name": "wrapped"}],
        reading(),
        reading(wrapped={}),
        [("wrapped", ADDED, None, 0.0, "")],
        id="wrapper-presence-is-not-a-number",
    ),
]


@pytest.mark.parametrize(
    ("specs", "bank", "bk", "expected"),
    NUMBER_CASES,
)
def test_number(specs: list[Spec], bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`number` tolerates doubles within an absolute or relative tolerance (unset counting as 0, wrappers
    by value), never text or a wrapper present on one side only."""
    check(specs, READ, bank, bk, expected, PROBE_REGISTRY)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        pytest.param(
            {"path": "probe.v1.Reading.labels", "rule": "number", "absolute": 1},
            "no field it names holds a number (probe.v1.Reading.LabelsEntry.value is not one)",
            id="number-on-text",
        ),
        pytest.param(
            {"path": "bank.v1.Trade.price", "rule": "timestamp", "tolerance": "1s"},
            "no field it names holds a Timestamp or Duration (bank.v1.Trade.price is not one): a time written"
            ' as text is compared as text; a clock\'s value each side stamps on its own is `rule = "ignore"`',
            id="timestamp-on-text",
        ),
        pytest.param(
            {"path": "bank.v1.Trade.side", "rule": "enum-map", "map": {"NOPE": "X"}},
            "NOPE is not a value of the enum it maps",
            id="enum-map-naming-no-value",
        ),
        pytest.param(
            {"path": "bank.v1.Trade.quantity", "rule": "custom", "callable": "os:getcwd"},
            "custom: os:getcwd does not take two values (Bank's, BK's)",
            id="custom-taking-no-values",
        ),
        pytest.param(
            {"path": "bank.v1.Trade.quantity", "rule": "enum-map", "map": {"SIDE_BUY": "BUY"}},
            "no field it names holds an enum",
            id="enum-map-on-text",
        ),
        pytest.param(
            {"path": "bank.v1.Trade.side", "rule": "decimal"},
            "no field it names holds a decimal string or a money message (bank.v1.Trade.side is not one)",
            id="decimal-on-an-enum",
        ),
        pytest.param(
            {"path": "bank.v1.Trade.booked_at", "rule": "decimal"},
            "no field it names holds a decimal string or a money message",
            id="decimal-on-a-timestamp",
        ),
        pytest.param(
            {"path": "probe.v1.Reading.price", "rule": "decimal"},
            "no field it names holds a decimal string or a money message (probe.v1.Reading.price is not one)",
            id="decimal-on-a-message-that-is-not-money",
        ),
        pytest.param(
            {"path": "probe.v1.Reading.wrapped", "rule": "decimal"},
            "no field it names holds a decimal string or a money message",
            id="decimal-on-a-wrapped-number",
        ),
    ],
)
def test_a_built_in_rule_on_fields_it_can_never_judge_is_refused_at_start(spec: Spec, says: str) -> None:
    """A rule that could never tolerate anything (its fields hold none of the values it judges) started
    cleanly, and its author believed it worked. It is refused, naming the rule and a field."""
    registry = PROBE_REGISTRY if spec["path"].startswith("probe.") else REGISTRY
    with pytest.raises(RuleError, match=re.escape(says)):
        build_rules([spec], registry, parse_duration)


# ---- timestamp --------------------------------------------------------------------------

CLOCK = {
    "regex": r"bank\.v1\.\w+\.(as_of|booked_at)",
    "rule": "timestamp",
    "tolerance": "2s",
    "name": "clock",
}


def _as_of(
    bank: timestamp_pb2.Timestamp | None, bk: timestamp_pb2.Timestamp | None, spec: Spec = CLOCK
) -> Any:
    return (
        [spec],
        pb.Balance(cash="1", as_of=bank) if bank is not None else pb.Balance(cash="1"),
        pb.Balance(cash="1", as_of=bk) if bk is not None else pb.Balance(cash="1"),
    )


TIMESTAMP_CASES: list[Any] = [
    pytest.param(
        *_as_of(ts(10), ts(11, 500_000_000)),
        [("as_of", CHANGED, "1970-01-01T00:00:10Z", "1970-01-01T00:00:11.500Z", "clock")],
        id="within",
    ),
    pytest.param(
        *_as_of(ts(10), ts(12)),
        [("as_of", CHANGED, "1970-01-01T00:00:10Z", "1970-01-01T00:00:12Z", "clock")],
        id="at-the-tolerance",
    ),
    pytest.param(
        *_as_of(ts(10), ts(12, 1)),
        [("as_of", CHANGED, "1970-01-01T00:00:10Z", "1970-01-01T00:00:12.000000001Z", "")],
        id="a-nanosecond-beyond",
    ),
    pytest.param(
        *_as_of(ts(12), ts(10, 500)),
        [("as_of", CHANGED, "1970-01-01T00:00:12Z", "1970-01-01T00:00:10.000000500Z", "clock")],
        id="bk-earlier",
    ),
    pytest.param(
        *_as_of(None, ts(10)), [("as_of", ADDED, None, "1970-01-01T00:00:10Z", "")], id="one-side-only"
    ),
    pytest.param(
        *_as_of(ts(2**40), ts(2**40 + 1)),
        [("as_of", CHANGED, "1099511627776s+0ns", "1099511627777s+0ns", "clock")],
        id="outside-the-text-range-still-by-nanoseconds",
    ),
    pytest.param(
        *_as_of(ts(10), ts(10, 40_000_000), {**CLOCK, "tolerance": "50ms"}),
        [("as_of", CHANGED, "1970-01-01T00:00:10Z", "1970-01-01T00:00:10.040Z", "clock")],
        id="milliseconds-within",
    ),
    pytest.param(
        *_as_of(ts(10), ts(10, 60_000_000), {**CLOCK, "tolerance": "50ms"}),
        [("as_of", CHANGED, "1970-01-01T00:00:10Z", "1970-01-01T00:00:10.060Z", "")],
        id="milliseconds-beyond",
    ),
]


@pytest.mark.parametrize(("specs", "bank", "bk", "expected"), TIMESTAMP_CASES)
def test_timestamp(specs: list[Spec], bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`timestamp` tolerates instants at most `tolerance` apart either way (shown as their JSON text), never
    a timestamp on one side only."""
    check(specs, GET_BALANCE, bank, bk, expected)


LATE_CASES = [
    # (BK's time after Bank's in seconds, the shadow's lateness, Bank primary, offset, tolerated)
    pytest.param(3.0, 3.0, True, 0.0, True, id="bk-stamped-as-late-as-its-call"),
    pytest.param(0.25, 3.0, True, 0.0, True, id="a-time-stamped-before-read-late"),
    pytest.param(1.5, 3.0, True, 0.0, True, id="in-between"),
    pytest.param(5.5, 3.0, True, 0.0, False, id="later-than-its-lateness-and-tolerance"),
    pytest.param(-2.5, 3.0, True, 0.0, False, id="earlier-than-the-tolerance"),
    # BK primary: Bank is the shadow, the side that stamps later
    pytest.param(-3.0, 3.0, False, 0.0, True, id="bank-shadow-stamped-late"),
    pytest.param(3.0, 3.0, False, 0.0, False, id="bk-primary-later-is-real"),
    # a replay: BK runs later by its offset, exactly (within the tolerance)
    pytest.param(3600.0, 0.0, True, 3600.0, True, id="replay-offset"),
    pytest.param(1.0, 0.0, True, 3600.0, False, id="replay-offset-is-not-a-window"),
]


@pytest.mark.parametrize(("ahead", "late", "bank_primary", "offset", "tolerated"), LATE_CASES)
def test_timestamp_allows_for_a_shadow_late(
    ahead: float, late: float, bank_primary: bool, offset: float, tolerated: bool
) -> None:
    """A mirrored call sent `late` s after its primary's start lets the shadow's time run up to that much
    later than the primary's, not earlier (tolerance 2 s); a replay's offset moves Bank's time on exactly."""
    rules = build_rules([CLOCK], REGISTRY, parse_duration)
    bank = answer(pb.Balance(cash="1", as_of=ts(1000)))  # BK's `ahead` s later
    bk = answer(pb.Balance(cash="1", as_of=ts(*divmod(1000 * 10**9 + round(ahead * 1e9), 10**9))))
    primary, shadow = (bank, bk) if bank_primary else (bk, bank)
    found = compare(
        exchange(
            GET_BALANCE, primary, shadow, primary_is_bank=bank_primary, shadow_late=late, clock_offset=offset
        ),
        REGISTRY,
        rules,
    )
    assert [(d.path, bool(d.rule)) for d in found.differences] == [("as_of", tolerated)]
    assert found.verdict is (Verdict.MATCH if tolerated else Verdict.MISMATCH)


# a replay: the call came live at 1000 s and went to BK 60 s later (offset 60); the calls under way at 900 s
# live went with offset 70, those at 990 s with offset 61 (`Exchange.stamp_offsets`)
STAMPS = ((899.0, 901.0, 70.0, 70.0), (989.5, 990.5, 61.0, 61.0), (1000.0, 1000.1, 60.0, 60.0))
STAMP_CASES = [
    pytest.param(900, 70.0, True, id="an-old-time-by-the-offset-of-the-call-that-stamped-it"),
    pytest.param(900, 60.0, True, id="an-old-time-by-the-call-s-own-offset-bank-s-clock-may-lag"),
    pytest.param(900, 75.0, False, id="an-old-time-beyond-both-is-a-difference"),
    pytest.param(900, 55.0, False, id="an-old-time-below-both-is-a-difference"),
    pytest.param(990, 61.0, True, id="a-time-of-another-moment-by-its-offset"),
    pytest.param(990, 70.0, False, id="not-by-the-offset-of-a-moment-it-was-not-stamped-at"),
    pytest.param(1000, 60.0, True, id="its-own-time-by-its-offset"),
    pytest.param(1005, 60.0, True, id="a-time-after-it-came-by-its-offset"),
    pytest.param(1005, 70.0, False, id="a-time-after-it-came-by-its-offset-alone"),
    pytest.param(500, 70.0, False, id="a-time-before-the-recording-by-its-own-offset-alone"),
]


@pytest.mark.parametrize(("stamped", "ahead", "tolerated"), STAMP_CASES)
def test_a_replayed_time_is_moved_on_by_the_offsets_of_the_calls_under_way_when_bank_stamped_it(
    stamped: int, ahead: float, tolerated: bool
) -> None:
    """Bank stamped `as_of` at `stamped` s; BK's time is `ahead` s later. A time stamped before the call
    came is allowed the offsets of the calls under way then and the call's own; after it came (beyond the
    clocks' margin), the call's own alone. Tolerance 2 s."""
    rules = build_rules([CLOCK], REGISTRY, parse_duration)
    bank = answer(pb.Balance(cash="1", as_of=ts(stamped)))
    bk = answer(pb.Balance(cash="1", as_of=ts(*divmod(stamped * 10**9 + round(ahead * 1e9), 10**9))))
    found = compare(
        exchange(GET_BALANCE, bank, bk, clock_offset=60.0, stamp_offsets=STAMPS, recorded_at=1000.0),
        REGISTRY,
        rules,
    )
    assert [(d.path, bool(d.rule)) for d in found.differences] == [("as_of", tolerated)]


POSTED = {"path": "bank.v1.LedgerEntry.posted_at", "rule": "timestamp", "tolerance": "2s", "name": "clock"}
KEYED_BY_SEQUENCE = {"path": "bank.v1.Ledger/StreamLedgerEntries", "rule": "keyed", "key": ["sequence"]}
AS_A_MULTISET = {"path": "bank.v1.Ledger/StreamLedgerEntries", "rule": "multiset"}


def _posted(sequence: int, seconds: int) -> pb.LedgerEntry:
    return pb.LedgerEntry(sequence=sequence, amount="1", posted_at=ts(seconds))


@pytest.mark.parametrize(
    ("pairing", "reordered"),
    [([], False), ([KEYED_BY_SEQUENCE], True), ([AS_A_MULTISET], False)],
    ids=["in-order", "keyed", "multiset"],
)
def test_each_answer_of_a_replayed_session_moves_banks_time_on_by_its_own_offset(
    pairing: list[Spec], reordered: bool
) -> None:
    """Bank stamped three answers 3 s apart (1000, 1003, 1006 s), each as the request it followed came;
    replayed, those requests reached BK together, which stamped all three at 5000 s. Each answer's own
    offset (4000, 3997, 3994 s) moves Bank's time on, whichever of BK's messages a stream rule pairs it
    with. One offset for the whole call finds two false differences; a time of BK's off its own message's
    offset by more than the tolerance is a difference still."""
    rules = build_rules([POSTED, *pairing], REGISTRY, parse_duration)
    bank = answer(_posted(1, 1000), _posted(2, 1003), _posted(3, 1006))

    def bk(*seconds: int) -> Outcome:
        posted = [_posted(n, at) for n, at in enumerate(seconds, start=1)]
        return answer(*(reversed(posted) if reordered else posted))

    offsets = (4000.0, 3997.0, 3994.0)
    found = compare(
        exchange(STREAM_ENTRIES, bank, bk(5000, 5000, 5000), clock_offset=4000.0, message_offsets=offsets),
        REGISTRY,
        rules,
    )
    assert found.verdict is Verdict.MATCH, found.differences
    found = compare(
        exchange(STREAM_ENTRIES, bank, bk(5000, 5000, 5000), clock_offset=4000.0), REGISTRY, rules
    )
    assert sorted(bool(d.rule) for d in found.differences) == [False, False, True]
    late = bk(5000, 5004, 5000)  # BK stamped the second 4 s after it got its request
    found = compare(
        exchange(STREAM_ENTRIES, bank, late, clock_offset=4000.0, message_offsets=offsets), REGISTRY, rules
    )
    assert [str(d.bk) for d in found.real_differences] == ["1970-01-01T01:23:24Z"], found.differences


@pytest.mark.parametrize(
    ("pairing", "reordered"),
    [([], False), ([KEYED_BY_SEQUENCE], True), ([AS_A_MULTISET], False)],
    ids=["in-order", "keyed", "multiset"],
)
def test_each_message_of_a_stream_is_allowed_only_its_own_lateness(
    pairing: list[Spec], reordered: bool
) -> None:
    """BK stamps each of three entries 3 s after Bank (tolerance 2 s), in a stream whose messages came
    0.5, 3.5 and 6.5 s after the call started (the call's own lateness: 6.5 s). Each message is allowed
    the lateness of its own (the later of the two paired, whichever a stream rule pairs): in order, the
    first is a difference and the others are tolerated. With the call's lateness for all three, none
    was."""
    rules = build_rules([POSTED, *pairing], REGISTRY, parse_duration)
    bank = answer(_posted(1, 1000), _posted(2, 1003), _posted(3, 1006))
    posted = [_posted(1, 1003), _posted(2, 1006), _posted(3, 1009)]
    bk = answer(*(reversed(posted) if reordered else posted))
    lates = (0.5, 3.5, 6.5)
    found = compare(
        exchange(STREAM_ENTRIES, bank, bk, shadow_late=6.5, own_late=6.5, message_late=lates), REGISTRY, rules
    )
    real = [d.path for d in found.real_differences]
    # reordered, BK's first entry is its last message: paired with it, Bank's first is allowed 6.5 s
    assert real == ([] if reordered else ["[0].posted_at"]), found.differences
    found = compare(exchange(STREAM_ENTRIES, bank, bk, shadow_late=6.5, own_late=6.5), REGISTRY, rules)
    assert not found.real_differences, found.differences


PROBE_CLOCK = {
    "regex": r"probe\.v1\.(Reading\.(stamps|stamped)|Price\.as_of)",
    "rule": "timestamp",
    "tolerance": "2s",
    "name": "clock",
}


def _stamped_as(where: str, seconds: int, nanos: int = 0) -> message.Message:
    """A probe Reading holding one time, in a singular, a repeated or a map field."""
    if where == "singular":
        return reading(price={"amount": "1", "lots": 1, "as_of": stamp(seconds, nanos)})
    if where == "repeated":
        return reading(stamps=[stamp(seconds, nanos)])
    return reading(stamped={"opened": stamp(seconds, nanos)})


@pytest.mark.parametrize("where", ["singular", "repeated", "map"])
@pytest.mark.parametrize(("ahead", "late", "bank_primary", "offset", "tolerated"), LATE_CASES)
def test_timestamp_allows_for_a_late_shadow_and_a_replay_in_lists_and_maps(
    where: str, ahead: float, late: float, bank_primary: bool, offset: float, tolerated: bool
) -> None:
    """A repeated Timestamp, and a Timestamp map value, are allowed for a shadow that went late and for a
    replay's offset exactly as a singular Timestamp is (tolerance 2 s)."""
    rules = build_rules([PROBE_CLOCK], PROBE_REGISTRY, parse_duration)
    bank = answer(_stamped_as(where, 1000))
    bk = answer(_stamped_as(where, *divmod(1000 * 10**9 + round(ahead * 1e9), 10**9)))
    primary, shadow = (bank, bk) if bank_primary else (bk, bank)
    found = compare(
        exchange(READ, primary, shadow, primary_is_bank=bank_primary, shadow_late=late, clock_offset=offset),
        PROBE_REGISTRY,
        rules,
    )
    assert [bool(d.rule) for d in found.differences] == [tolerated]
    assert found.verdict is (Verdict.MATCH if tolerated else Verdict.MISMATCH)


@pytest.mark.parametrize(
    ("ahead", "bank_primary", "tolerated"),
    [
        pytest.param(3.0, False, True, id="bk-primary-now-bk-stamped-late-before"),
        pytest.param(5.5, False, False, id="bk-primary-later-than-that"),
        pytest.param(-3.0, True, True, id="bank-primary-again-bank-stamped-late-before"),
        pytest.param(3.0 + 2.5, True, False, id="bank-primary-bk-later-unallowed"),
    ],
)
def test_timestamp_allows_for_the_primary_late_before_a_switch(
    ahead: float, bank_primary: bool, tolerated: bool
) -> None:
    """A time the primary stamped late, while it was the shadow (before a switch), may run up to that much
    later than the shadow's (tolerance 2 s); the shadow's own lateness stays its own."""
    rules = build_rules([CLOCK], REGISTRY, parse_duration)
    bank = answer(pb.Balance(cash="1", as_of=ts(1000)))
    bk = answer(pb.Balance(cash="1", as_of=ts(*divmod(1000 * 10**9 + round(ahead * 1e9), 10**9))))
    primary, shadow = (bank, bk) if bank_primary else (bk, bank)
    found = compare(
        exchange(GET_BALANCE, primary, shadow, primary_is_bank=bank_primary, primary_late=3.0),
        REGISTRY,
        rules,
    )
    assert [(d.path, bool(d.rule)) for d in found.differences] == [("as_of", tolerated)]


@pytest.mark.parametrize(
    ("ahead", "bank_primary", "own", "until", "tolerated"),
    [
        pytest.param(3.0, True, 0.0, 1005.0, True, id="stamped-before-the-late-write-was-done"),
        pytest.param(3.0, True, 0.0, 990.0, False, id="stamped-well-after-it"),
        pytest.param(3.0, True, 0.0, 997.5, True, id="stamped-within-tolerance-and-margin-after-it"),
        pytest.param(3.0, True, 0.0, 996.5, False, id="stamped-beyond-tolerance-and-margin-after-it"),
        pytest.param(3.0, True, 3.0, 990.0, True, id="the-calls-own-lateness-holds-after-it"),
        pytest.param(2.15, True, 0.0, 990.0, True, id="a-band-over-later-holds-after-it"),
        pytest.param(2.3, True, 0.0, 990.0, False, id="beyond-that-bands-own"),
        pytest.param(-3.0, False, 0.0, 1005.0, True, id="bk-primary-bank-stamped-late-before"),
        pytest.param(-3.0, False, 0.0, 990.0, False, id="bk-primary-bank-later-well-after-it"),
    ],
)
def test_timestamp_allows_for_its_keys_late_writes_only_for_times_stamped_while_they_were(
    ahead: float, bank_primary: bool, own: float, until: float, tolerated: bool
) -> None:
    """A key's writes mirrored 3 s late to the shadow (tolerance 2 s) allow for times on it stamped by the
    time the last of them was over (the step's `until`, plus the tolerance and a margin of 1 s), not for
    times stamped later: those are allowed only the call's own lateness, and the other steps'. The primary
    stamps at 1,000 s."""
    rules = build_rules([CLOCK], REGISTRY, parse_duration)
    primary_at, shadow_at = 1000 * 10**9, 1000 * 10**9 + round((ahead if bank_primary else -ahead) * 1e9)
    bank_at, bk_at = (primary_at, shadow_at) if bank_primary else (shadow_at, primary_at)
    bank = answer(pb.Balance(cash="1", as_of=ts(*divmod(bank_at, 10**9))))
    bk = answer(pb.Balance(cash="1", as_of=ts(*divmod(bk_at, 10**9))))
    primary, shadow = (bank, bk) if bank_primary else (bk, bank)
    found = compare(
        exchange(
            GET_BALANCE,
            primary,
            shadow,
            primary_is_bank=bank_primary,
            own_late=own,
            late_steps=((until, 3.0, 0.0), (1010.0, 0.2, 0.0)),  # and writes 0.2 s late, over later
            shadow_late=3.0,
        ),
        REGISTRY,
        rules,
    )
    assert [(d.path, bool(d.rule)) for d in found.differences] == [("as_of", tolerated)]


_WRITES = st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(0.0, 100.0)), min_size=1, max_size=8)


def _stamped(bank_s: float, bk_s: float, steps: Late) -> Comparison:
    """BK's time against Bank's, for a call not late itself, on a key whose writes went `steps` late."""
    rules = build_rules([CLOCK], REGISTRY, parse_duration)
    bank = answer(pb.Balance(cash="1", as_of=ts(*divmod(round(bank_s * 1e9), 10**9))))
    bk = answer(pb.Balance(cash="1", as_of=ts(*divmod(round(bk_s * 1e9), 10**9))))
    bands_of = tuple(bands(steps))
    most_late = max([0.0, *(late for _, late, _ in bands_of)])
    return compare(
        exchange(GET_BALANCE, bank, bk, shadow_late=most_late, own_late=0.0, late_steps=bands_of),
        REGISTRY,
        rules,
    )


@settings(max_examples=200, deadline=None)
@given(writes=_WRITES, pick=st.integers(0, 7), share=st.floats(0.0, 1.0), slack=st.floats(-1.9, 1.9))
def test_a_time_stamped_while_a_late_write_was_under_way_is_always_allowed_for(
    writes: list[tuple[float, float]], pick: int, share: float, slack: float
) -> None:
    """However a key's late writes fall into bands, merged in any order (as replicas merge them in the
    store), a time stamped while one of them was under way, which BK stamped that much later (within the
    tolerance of 2 s), is never a difference: the bands never cry wolf."""
    merged = NOT_LATE
    for late, end in writes:
        merged = most(merged, late_of(late, bk_is_shadow=True, until=1000.0 + end))
    late, end = writes[pick % len(writes)]
    stamped = 1000.0 + end * share  # by its end
    found = _stamped(stamped, stamped + late + slack, merged)
    assert [(d.path, d.rule) for d in found.differences] in ([], [("as_of", "clock")]), found.differences


@settings(max_examples=200, deadline=None)
@given(writes=_WRITES, after=st.floats(0.01, 1000.0), ahead=st.floats(2.01, 10.0))
def test_a_time_stamped_after_every_late_write_on_its_key_is_held_to_the_tolerance(
    writes: list[tuple[float, float]], after: float, ahead: float
) -> None:
    """A time stamped after the key's last late write was over, plus the tolerance (2 s) and the margin,
    is allowed none of their lateness: BK's time later than the tolerance is a difference."""
    merged = NOT_LATE
    for late, end in writes:
        merged = most(merged, late_of(late, bk_is_shadow=True, until=1000.0 + end))
    stamped = 1000.0 + max(end for _, end in writes) + 2.0 + LATE_MARGIN + after
    found = _stamped(stamped, stamped + ahead, merged)
    assert [(d.path, d.rule) for d in found.differences] == [("as_of", "")]


# ---- string -------------------------------------------------------------------------------

NAME = {"path": "bank.v1.Account.owner_name", "rule": "string", "name": "name"}
CASE_ONLY = {**NAME, "whitespace": False}
SPACE_ONLY = {**NAME, "case": False}


def _owner(bank: str, bk: str, spec: Spec, tolerated: bool) -> Any:
    return pytest.param(
        [spec],
        pb.Account(account_id="A1", owner_name=bank),
        pb.Account(account_id="A1", owner_name=bk),
        [("owner_name", CHANGED, bank, bk, "name" if tolerated else "")],
        id=f"{'+'.join(k for k in ('case', 'whitespace') if spec.get(k, True))}:{bank!r}-vs-{bk!r}",
    )


STRING_CASES: list[Any] = [
    _owner("Alice  Smith", "alice smith", NAME, True),
    _owner(" Alice\tSmith\n", "Alice Smith", NAME, True),
    _owner("Alice", "Alicia", NAME, False),
    _owner("ALICE", "alice", CASE_ONLY, True),
    _owner("alice  smith", "alice smith", CASE_ONLY, False),
    _owner("a  b", "a b", SPACE_ONLY, True),
    _owner("A", "a", SPACE_ONLY, False),
    pytest.param(
        [NAME],
        pb.Account(account_id="A1", owner_name="  "),
        pb.Account(account_id="A1"),
        [("owner_name", REMOVED, "  ", None, "name")],
        id="blank-against-unset",
    ),
]


@pytest.mark.parametrize(("specs", "bank", "bk", "expected"), STRING_CASES)
def test_string(specs: list[Spec], bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`string` tolerates text equal after folding case and/or collapsing whitespace, as configured."""
    check(specs, OPEN_ACCOUNT, bank, bk, expected)


# ---- enum-map -------------------------------------------------------------------------------

SIDES = {"path": "bank.v1.Trade.side", "rule": "enum-map", "map": {"SIDE_BUY": "SIDE_SELL"}, "name": "sides"}
STATUSES = {
    "path": "bank.v1.Trade.status",
    "rule": "enum-map",
    "map": {"TRADE_STATUS_UNSPECIFIED": "TRADE_STATUS_BOOKED"},
    "name": "statuses",
}

ENUM_CASES: list[Any] = [
    pytest.param(
        [SIDES],
        pb.Trade(side=pb.SIDE_BUY),
        pb.Trade(side=pb.SIDE_SELL),
        [("side", CHANGED, "SIDE_BUY", "SIDE_SELL", "sides")],
        id="mapped",
    ),
    pytest.param(
        [SIDES],
        pb.Trade(side=pb.SIDE_SELL),
        pb.Trade(side=pb.SIDE_BUY),
        [("side", CHANGED, "SIDE_SELL", "SIDE_BUY", "")],
        id="one-way-only",
    ),
    pytest.param(
        [SIDES],
        pb.Trade(side=pb.SIDE_BUY),
        pb.Trade(side=7),  # type: ignore[arg-type]
        [("side", CHANGED, "SIDE_BUY", 7, "")],
        id="unknown-number",
    ),
    pytest.param(
        [STATUSES],
        pb.Trade(trade_id="T1"),
        pb.Trade(trade_id="T1", status=pb.TRADE_STATUS_BOOKED),
        [("status", ADDED, None, "TRADE_STATUS_BOOKED", "statuses")],
        id="unset-is-the-zero-value",
    ),
]


@pytest.mark.parametrize(("specs", "bank", "bk", "expected"), ENUM_CASES)
def test_enum_map(specs: list[Spec], bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`enum-map` tolerates the enum value (by name) the map gives BK for Bank's, in that direction only."""
    check(specs, POST_TRADE, bank, bk, expected)


# ---- list rules: keyed, multiset, ordered, and streams ---------------------------------------

BY_SYMBOL = {"path": "bank.v1.Portfolio.positions", "rule": "keyed", "key": ["symbol"], "name": "by symbol"}
ANY_ORDER = {"path": "bank.v1.SettlementReport.settled_trade_ids", "rule": "multiset", "name": "any order"}
IN_ORDER = {"path": "bank.v1.Portfolio.positions", "rule": "ordered"}
MSFT = {"symbol": "MSFT", "quantity": "1"}


def _portfolio(*positions: tuple[str, str]) -> pb.Portfolio:
    return pb.Portfolio(positions=[pb.Position(symbol=s, quantity=q) for s, q in positions])


def _settled(*ids: str) -> pb.SettlementReport:
    return pb.SettlementReport(settled_trade_ids=ids, settled_count=2)


LIST_CASES: list[Any] = [
    pytest.param(
        [BY_SYMBOL],
        GET_PORTFOLIO,
        _positions("AAPL", "MSFT", "KO"),
        _positions("MSFT", "KO", "AAPL"),
        [],
        id="keyed-shuffled-matches",
    ),
    pytest.param(
        [BY_SYMBOL],
        GET_PORTFOLIO,
        _positions("AAPL", "MSFT"),
        _positions("AAPL"),
        [("positions[symbol=MSFT]", REMOVED, MSFT, None, "")],
        id="keyed-missing-key",
    ),
    pytest.param(
        [BY_SYMBOL],
        GET_PORTFOLIO,
        _positions("AAPL"),
        _positions("MSFT", "AAPL"),
        [("positions[symbol=MSFT]", ADDED, None, MSFT, "")],
        id="keyed-extra-key",
    ),
    pytest.param(
        [BY_SYMBOL],
        GET_PORTFOLIO,
        _portfolio(("AAPL", "10"), ("MSFT", "5")),
        _portfolio(("MSFT", "5"), ("AAPL", "11")),
        [("positions[symbol=AAPL].quantity", CHANGED, "10", "11", "")],
        id="keyed-changed-leaf",
    ),
    pytest.param(
        [BY_SYMBOL],
        GET_PORTFOLIO,
        _portfolio(("AAPL", "10"), ("AAPL", "5")),
        _portfolio(("AAPL", "10"), ("AAPL", "6"), ("AAPL", "7")),
        [
            ("positions[symbol=AAPL#2].quantity", CHANGED, "5", "6", ""),
            ("positions[symbol=AAPL#3]", ADDED, None, {"symbol": "AAPL", "quantity": "7"}, ""),
        ],
        id="keyed-repeated-key-in-order-of-appearance",
    ),
    pytest.param(
        [{**BY_SYMBOL, "key": "symbol"}],
        GET_PORTFOLIO,
        _portfolio(("AAPL", "10"), ("MSFT", "5")),
        _portfolio(("MSFT", "5"), ("AAPL", "11")),
        [("positions[symbol=AAPL].quantity", CHANGED, "10", "11", "")],
        id="keyed-key-as-one-name",
    ),
    pytest.param(
        [{**BY_SYMBOL, "key": ["symbol", "quantity"]}],
        GET_PORTFOLIO,
        _portfolio(("AAPL", "10"), ("AAPL", "5")),
        _portfolio(("AAPL", "5"), ("AAPL", "11")),
        [
            ("positions[symbol=AAPL,quantity=10]", REMOVED, {"symbol": "AAPL", "quantity": "10"}, None, ""),
            ("positions[symbol=AAPL,quantity=11]", ADDED, None, {"symbol": "AAPL", "quantity": "11"}, ""),
        ],
        id="keyed-by-several-fields",
    ),
    pytest.param(
        [BY_SYMBOL, DECIMAL],
        GET_PORTFOLIO,
        _portfolio(("AAPL", "10"), ("MSFT", "5")),
        _portfolio(("MSFT", "5.0"), ("AAPL", "10")),
        [("positions[symbol=MSFT].quantity", CHANGED, "5", "5.0", "decimal")],
        id="keyed-and-a-leaf-rule-both-apply",
    ),
    pytest.param(
        [ANY_ORDER],
        SETTLE_TRADES,
        _settled("T1", "T2", "T3"),
        _settled("T3", "T1", "T2"),
        [],
        id="multiset-shuffled-matches",
    ),
    pytest.param(
        [ANY_ORDER],
        SETTLE_TRADES,
        _settled("T1", "T2", "T2"),
        _settled("T2", "T1"),
        [("settled_trade_ids[2]", REMOVED, "T2", None, "")],
        id="multiset-counts-duplicates",
    ),
    pytest.param(
        [ANY_ORDER],
        SETTLE_TRADES,
        _settled("T1", "T2"),
        _settled("T3", "T1"),
        [("settled_trade_ids[1]", CHANGED, "T2", "T3", "")],
        id="multiset-unpaired-elements-pair-in-order",
    ),
    pytest.param(
        [{"path": "bank.v1.ListTradesResponse.trades", "rule": "multiset"}],
        LIST_TRADES,
        pb.ListTradesResponse(trades=[pb.Trade(trade_id="T1"), pb.Trade(trade_id="T2", fee="1")]),
        pb.ListTradesResponse(trades=[pb.Trade(trade_id="T2", fee="1"), pb.Trade(trade_id="T1")]),
        [],
        id="multiset-of-messages",
    ),
    pytest.param(
        [],
        GET_PORTFOLIO,
        _positions("AAPL", "MSFT"),
        _positions("MSFT", "AAPL"),
        [
            ("positions[0].symbol", CHANGED, "AAPL", "MSFT", ""),
            ("positions[1].symbol", CHANGED, "MSFT", "AAPL", ""),
        ],
        id="ordered-by-default",
    ),
    pytest.param(
        [IN_ORDER, BY_SYMBOL],
        GET_PORTFOLIO,
        _positions("AAPL", "MSFT"),
        _positions("MSFT", "AAPL"),
        [
            ("positions[0].symbol", CHANGED, "AAPL", "MSFT", ""),
            ("positions[1].symbol", CHANGED, "MSFT", "AAPL", ""),
        ],
        id="ordered-first-wins-over-keyed",
    ),
    pytest.param(
        [BY_SYMBOL, IN_ORDER],
        GET_PORTFOLIO,
        _positions("AAPL", "MSFT"),
        _positions("MSFT", "AAPL"),
        [],
        id="keyed-first-wins-over-ordered",
    ),
]


@pytest.mark.parametrize(COLUMNS, LIST_CASES)
def test_list_rules(specs: list[Spec], method: str, bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """Repeated fields pair by position unless a rule says by key (`[key=value]`, repeats `#n`) or as a
    multiset; only unpaired elements are added/removed, and a list rule tolerates nothing by itself."""
    check(specs, method, bank, bk, expected)


BY_SEQUENCE = {
    "path": "bank.v1.Ledger/StreamLedgerEntries",
    "rule": "keyed",
    "key": ["sequence"],
    "name": "by sequence",
}
AMOUNTS = {"path": "bank.v1.LedgerEntry.amount", "rule": "decimal", "name": "amounts"}

STREAM_CASES: list[Any] = [
    pytest.param(
        [BY_SEQUENCE],
        (_entry(1, "100"), _entry(2, "-5"), _entry(3, "1")),
        (_entry(3, "1"), _entry(1, "100"), _entry(2, "-5")),
        [],
        id="keyed-shuffled-matches",
    ),
    pytest.param(
        [BY_SEQUENCE],
        (_entry(1, "100"), _entry(2, "-5")),
        (_entry(1, "100"),),
        [("[sequence=2]", REMOVED, {"sequence": 2, "kind": "ENTRY_KIND_TRADE", "amount": "-5"}, None, "")],
        id="keyed-missing-message",
    ),
    pytest.param(
        [BY_SEQUENCE],
        (_entry(1, "100"), _entry(2, "-5")),
        (_entry(2, "-4"), _entry(1, "100")),
        [("[sequence=2].amount", CHANGED, "-5", "-4", "")],
        id="keyed-changed-leaf",
    ),
    pytest.param(
        [BY_SEQUENCE, AMOUNTS],
        (_entry(1, "100.00"), _entry(2, "-5.00")),
        (_entry(2, "-5"), _entry(1, "100.00")),
        [("[sequence=2].amount", CHANGED, "-5.00", "-5", "amounts")],
        id="keyed-with-a-leaf-rule",
    ),
    pytest.param(
        [{"path": "bank.v1.Ledger/StreamLedgerEntries", "rule": "multiset"}],
        (_entry(1, "1"), _entry(1, "1"), _entry(2, "2")),
        (_entry(2, "2"), _entry(1, "1"), _entry(1, "1")),
        [],
        id="multiset-shuffled-matches",
    ),
    pytest.param(
        [],
        (_entry(1, "1"), _entry(2, "2")),
        (_entry(2, "2"), _entry(1, "1")),
        [
            ("[0].sequence", CHANGED, 1, 2, ""),
            ("[0].amount", CHANGED, "1", "2", ""),
            ("[1].sequence", CHANGED, 2, 1, ""),
            ("[1].amount", CHANGED, "2", "1", ""),
        ],
        id="ordered-by-default",
    ),
]


@pytest.mark.parametrize(("specs", "bank", "bk", "expected"), STREAM_CASES)
def test_stream_rules(specs: list[Spec], bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """A list rule on "package.Service/Method" pairs the messages of its response stream."""
    check(specs, STREAM_ENTRIES, bank, bk, expected)


# ---- bk-may-add -------------------------------------------------------------------------

VENUE = {"path": "bank.v1.Trade.venue", "rule": "bk-may-add", "name": "venue"}
NEW_POSITIONS = {"path": "bank.v1.Portfolio.positions", "rule": "bk-may-add", "name": "new positions"}

MAY_ADD_CASES: list[Any] = [
    pytest.param(
        [VENUE],
        POST_TRADE,
        pb.Trade(trade_id="T1"),
        pb.Trade(trade_id="T1", venue="XNYS"),
        [("venue", ADDED, None, "XNYS", "venue")],
        id="added",
    ),
    pytest.param(
        [VENUE],
        POST_TRADE,
        pb.Trade(trade_id="T1", venue="XNYS"),
        pb.Trade(trade_id="T1"),
        [("venue", REMOVED, "XNYS", None, "")],
        id="removed-never",
    ),
    pytest.param(
        [VENUE],
        POST_TRADE,
        pb.Trade(trade_id="T1", venue="XLON"),
        pb.Trade(trade_id="T1", venue="XNYS"),
        [("venue", CHANGED, "XLON", "XNYS", "")],
        id="changed-never",
    ),
    pytest.param(
        [BY_SYMBOL, NEW_POSITIONS],
        GET_PORTFOLIO,
        _positions("AAPL"),
        _positions("MSFT", "AAPL"),
        [("positions[symbol=MSFT]", ADDED, None, MSFT, "new positions")],
        id="element-added",
    ),
    pytest.param(
        [BY_SYMBOL, NEW_POSITIONS],
        GET_PORTFOLIO,
        _positions("AAPL", "MSFT"),
        _positions("AAPL"),
        [("positions[symbol=MSFT]", REMOVED, MSFT, None, "")],
        id="element-removed-never",
    ),
]


@pytest.mark.parametrize(COLUMNS, MAY_ADD_CASES)
def test_bk_may_add(specs: list[Spec], method: str, bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """`bk-may-add` tolerates a field or element BK sends and Bank does not; never the reverse or a change."""
    check(specs, method, bank, bk, expected)


# ---- status -------------------------------------------------------------------------------

SAME_CODES = {"rule": "status", "equivalent": [["NOT_FOUND", "INVALID_ARGUMENT"]], "name": "codes"}
WORDING = {"path": "status", "rule": "status", "details": "ignore", "name": "wording"}
ACCOUNT_ID = {
    "rule": "status",
    "details": r"account '?(\w+)'? (?:not found|does not exist)",
    "name": "account",
}
RICH_WORDING = {
    "regex": r"google\.rpc\.(Status\.message|BadRequest\.FieldViolation\.description)",
    "rule": "ignore",
    "name": "rich wording",
}
NOT_FOUND_X = answer(code=NOT_FOUND, details="account 'X' not found")


def _error(code: int, details: str, rich: bytes | None = None) -> Outcome:
    return answer(code=code, details=details, trailing_metadata=trailers(rich))


STATUS_CASES: list[Any] = [
    pytest.param(
        [SAME_CODES],
        NOT_FOUND_X,
        _error(INVALID_ARGUMENT, "account 'X' not found"),
        [("status.code", STATUS, "NOT_FOUND", "INVALID_ARGUMENT", "codes")],
        id="equivalent-codes",
    ),
    pytest.param(
        [SAME_CODES],
        _error(INVALID_ARGUMENT, "x"),
        _error(NOT_FOUND, "x"),
        [("status.code", STATUS, "INVALID_ARGUMENT", "NOT_FOUND", "")],
        id="equivalent-codes-one-way-only",
    ),
    pytest.param(
        [SAME_CODES],
        _error(NOT_FOUND, "x", rich_status(NOT_FOUND, "x")),
        _error(INVALID_ARGUMENT, "x", rich_status(INVALID_ARGUMENT, "x")),
        [
            ("status.code", STATUS, "NOT_FOUND", "INVALID_ARGUMENT", "codes"),
            ("status.rich_details.code", CHANGED, NOT_FOUND, INVALID_ARGUMENT, "codes"),
        ],
        id="equivalent-codes-in-rich-details",
    ),
    pytest.param(
        [SAME_CODES],
        _error(INVALID_ARGUMENT, "x", rich_status(INVALID_ARGUMENT, "x")),
        _error(NOT_FOUND, "x", rich_status(NOT_FOUND, "x")),
        [
            ("status.code", STATUS, "INVALID_ARGUMENT", "NOT_FOUND", ""),
            ("status.rich_details.code", CHANGED, INVALID_ARGUMENT, NOT_FOUND, ""),
        ],
        id="equivalent-codes-in-rich-details-one-way-only",
    ),
    pytest.param(
        [SAME_CODES],
        _error(NOT_FOUND, "x", rich_status(NOT_FOUND, "x")),
        _error(INVALID_ARGUMENT, "x", rich_status(PERMISSION_DENIED, "x")),
        [
            ("status.code", STATUS, "NOT_FOUND", "INVALID_ARGUMENT", "codes"),
            ("status.rich_details.code", CHANGED, NOT_FOUND, PERMISSION_DENIED, ""),
        ],
        id="rich-details-code-not-equivalent",
    ),
    pytest.param(
        [SAME_CODES],
        _error(NOT_FOUND, "x", rich_status(NOT_FOUND, "x")),
        _error(INVALID_ARGUMENT, "x", rich_status(OK, "x")),
        [
            ("status.code", STATUS, "NOT_FOUND", "INVALID_ARGUMENT", "codes"),
            ("status.rich_details.code", REMOVED, NOT_FOUND, None, ""),
        ],
        id="rich-details-code-unset-on-one-side",
    ),
    pytest.param(
        [WORDING],
        NOT_FOUND_X,
        _error(NOT_FOUND, "no such account: X"),
        [("status.details", STATUS, "account 'X' not found", "no such account: X", "wording")],
        id="details-ignored",
    ),
    pytest.param(
        [WORDING],
        NOT_FOUND_X,
        _error(INVALID_ARGUMENT, "no such account: X"),
        [
            ("status.code", STATUS, "NOT_FOUND", "INVALID_ARGUMENT", ""),
            ("status.details", STATUS, "account 'X' not found", "no such account: X", "wording"),
        ],
        id="details-ignored-codes-still-compared",
    ),
    pytest.param(
        [ACCOUNT_ID],
        NOT_FOUND_X,
        _error(NOT_FOUND, "account X does not exist"),
        [("status.details", STATUS, "account 'X' not found", "account X does not exist", "account")],
        id="details-regex-same-groups",
    ),
    pytest.param(
        [ACCOUNT_ID],
        NOT_FOUND_X,
        _error(NOT_FOUND, "account Y does not exist"),
        [("status.details", STATUS, "account 'X' not found", "account Y does not exist", "")],
        id="details-regex-other-groups",
    ),
    pytest.param(
        [ACCOUNT_ID],
        NOT_FOUND_X,
        _error(NOT_FOUND, "account 'X' not found, sorry"),
        [("status.details", STATUS, "account 'X' not found", "account 'X' not found, sorry", "")],
        id="details-regex-must-match-all-of-both",
    ),
    pytest.param(
        [],
        NOT_FOUND_X,
        _error(NOT_FOUND, "account 'X' not found "),
        [("status.details", STATUS, "account 'X' not found", "account 'X' not found ", "")],
        id="details-exact-by-default",
    ),
    pytest.param(
        [RICH_WORDING],
        _error(INVALID_ARGUMENT, "bad order", BAD_QUANTITY),
        _error(
            INVALID_ARGUMENT, "bad order", rich_status(INVALID_ARGUMENT, "rejected", ("quantity", "> 0!"))
        ),
        [
            ("status.rich_details.message", CHANGED, "bad order", "rejected", "rich wording"),
            (
                "status.rich_details.details[0].field_violations[0].description",
                CHANGED,
                "must be > 0",
                "> 0!",
                "rich wording",
            ),
        ],
        id="rich-details-wording",
    ),
    pytest.param(
        [RICH_WORDING],
        _error(INVALID_ARGUMENT, "bad order", BAD_QUANTITY),
        _error(INVALID_ARGUMENT, "bad order", BAD_PRICE),
        [("status.rich_details.details[0].field_violations[0].field", CHANGED, "quantity", "price", "")],
        id="rich-details-field-still-compared",
    ),
    pytest.param(
        [{"path": "status.rich_details", "rule": "ignore", "name": "rich"}],
        _error(INVALID_ARGUMENT, "bad order"),
        _error(INVALID_ARGUMENT, "bad order", rich_status(INVALID_ARGUMENT, "bad order")),
        [("status.rich_details", ADDED, None, {"code": INVALID_ARGUMENT, "message": "bad order"}, "rich")],
        id="rich-details-on-one-side-ignored",
    ),
    pytest.param(
        [{"path": "status.rich_details", "rule": "ignore", "name": "rich"}],
        _error(INVALID_ARGUMENT, "bad order", BAD_QUANTITY),
        _error(INVALID_ARGUMENT, "bad order", BAD_PRICE),
        [("status.rich_details.details[0].field_violations[0].field", CHANGED, "quantity", "price", "rich")],
        id="rich-details-ignored-inside-too",
    ),
    pytest.param(
        [{"path": "status.rich_details", "rule": "ignore", "name": "rich"}],
        _error(INVALID_ARGUMENT, "bad order", BAD_QUANTITY),
        _error(INVALID_ARGUMENT, "bad order", b"\xff\xff"),
        [("status.rich_details", UNDECODABLE, None, "ffff", "rich")],
        id="rich-details-ignored-even-undecodable",
    ),
]


@pytest.mark.parametrize(("specs", "bank", "bk", "expected"), STATUS_CASES)
def test_status(specs: list[Spec], bank: Outcome, bk: Outcome, expected: list[Row]) -> None:
    """`status` tolerates equivalent code pairs (Bank's, BK's) and details ignored or matching one regex with
    equal groups; rich details fields follow the ordinary rules."""
    check(specs, POST_TRADE, bank, bk, expected)


# ---- where a rule applies: methods, first match -------------------------------------------

FEE_IN_POST_TRADE = {**DECIMAL, "methods": ["bank.v1.Ledger/PostTrade"]}
IGNORE_TRADE = {"path": "bank.v1.Trade.*", "rule": "ignore", "name": "ignore"}
FEE_EXACT = {"path": "bank.v1.Trade.fee", "rule": "decimal", "name": "fee"}
WORDING_IN_GET_ACCOUNT = {**WORDING, "methods": ["bank.v1.Ledger/GetAccount"]}
FEES = (pb.Trade(fee="1.0"), pb.Trade(fee="1"))

SCOPE_CASES: list[Any] = [
    pytest.param(
        [FEE_IN_POST_TRADE], POST_TRADE, *FEES, [("fee", CHANGED, "1.0", "1", "decimal")], id="in-method"
    ),
    pytest.param(
        [FEE_IN_POST_TRADE], CANCEL_TRADE, *FEES, [("fee", CHANGED, "1.0", "1", "")], id="other-method"
    ),
    pytest.param(
        [{**DECIMAL, "methods": ["/bank.v1.Ledger/PostTrade"]}],
        POST_TRADE,
        *FEES,
        [("fee", CHANGED, "1.0", "1", "decimal")],
        id="method-with-leading-slash",
    ),
    pytest.param(
        [WORDING_IN_GET_ACCOUNT],
        GET_ACCOUNT,
        NOT_FOUND_X,
        _error(NOT_FOUND, "gone"),
        [("status.details", STATUS, "account 'X' not found", "gone", "wording")],
        id="status-in-method",
    ),
    pytest.param(
        [WORDING_IN_GET_ACCOUNT],
        OPEN_ACCOUNT,
        NOT_FOUND_X,
        _error(NOT_FOUND, "gone"),
        [("status.details", STATUS, "account 'X' not found", "gone", "")],
        id="status-other-method",
    ),
    pytest.param(
        [FEE_EXACT, IGNORE_TRADE],
        POST_TRADE,
        pb.Trade(trade_id="T1", fee="1"),
        pb.Trade(trade_id="T2", fee="2"),
        [("trade_id", CHANGED, "T1", "T2", "ignore"), ("fee", CHANGED, "1", "2", "")],
        id="first-match-wins-even-when-it-tolerates-nothing",
    ),
    pytest.param(
        [IGNORE_TRADE, FEE_EXACT],
        POST_TRADE,
        pb.Trade(trade_id="T1", fee="1"),
        pb.Trade(trade_id="T2", fee="2"),
        [("trade_id", CHANGED, "T1", "T2", "ignore"), ("fee", CHANGED, "1", "2", "ignore")],
        id="first-match-wins-in-config-order",
    ),
    pytest.param(
        [FEE_IN_POST_TRADE, IGNORE_TRADE],
        CANCEL_TRADE,
        pb.Trade(fee="1"),
        pb.Trade(fee="2"),
        [("fee", CHANGED, "1", "2", "ignore")],
        id="a-rule-for-another-method-does-not-match",
    ),
    pytest.param(
        [WORDING, {**WORDING, "details": "exact", "name": "exact"}],
        OPEN_ACCOUNT,
        NOT_FOUND_X,
        _error(NOT_FOUND, "gone"),
        [("status.details", STATUS, "account 'X' not found", "gone", "wording")],
        id="first-status-rule-wins",
    ),
]


@pytest.mark.parametrize(COLUMNS, SCOPE_CASES)
def test_where_rules_apply(
    specs: list[Spec], method: str, bank: Answer, bk: Answer, expected: list[Row]
) -> None:
    """A rule with `methods` applies to those methods only, and for each field (or the status) the first
    rule in config order that matches it is the one applied."""
    check(specs, method, bank, bk, expected)


# ---- custom rules -------------------------------------------------------------------------

MODULE = "tests.comparators._custom_rules"
SAME_BOOK = {
    "path": "bank.v1.Trade.client_order_id",
    "rule": "custom",
    "callable": f"{MODULE}:same_prefix",
    "name": "same book",
}
WITHIN = {"path": "bank.v1.Trade.price", "rule": "custom", "callable": f"{MODULE}:WithinPercent"}


def _orders(bank: str, bk: str) -> tuple[pb.Trade, pb.Trade]:
    return pb.Trade(client_order_id=bank), pb.Trade(client_order_id=bk)


CUSTOM_CASES: list[Any] = [
    pytest.param(
        [SAME_BOOK],
        *_orders("ORD-1", "ORD-2"),
        [("client_order_id", CHANGED, "ORD-1", "ORD-2", "same book")],
        id="function",
    ),
    pytest.param(
        [SAME_BOOK],
        *_orders("ORD-1", "BUY-1"),
        [("client_order_id", CHANGED, "ORD-1", "BUY-1", "")],
        id="function-says-no",
    ),
    pytest.param(
        [{**SAME_BOOK, "callable": f"{MODULE}.same_prefix"}],
        *_orders("ORD-1", "ORD-2"),
        [("client_order_id", CHANGED, "ORD-1", "ORD-2", "same book")],
        id="dotted-path-without-colon",
    ),
    pytest.param(
        [{**WITHIN, "options": {"percent": 1}}],
        pb.Trade(price="100"),
        pb.Trade(price="100.9"),
        [("price", CHANGED, "100", "100.9", "custom price")],
        id="class-with-options-and-default-name",
    ),
    pytest.param(
        [{**WITHIN, "options": {"percent": 1}}],
        pb.Trade(price="100"),
        pb.Trade(price="102"),
        [("price", CHANGED, "100", "102", "")],
        id="class-with-options-says-no",
    ),
    pytest.param(
        [{**WITHIN, "options": {"percent": 1}}],
        pb.Trade(price="100"),
        pb.Trade(price="n/a"),
        [("price", CHANGED, "100", "n/a", "")],
        id="class-raising-on-odd-input",
    ),
    pytest.param(
        [{**SAME_BOOK, "callable": f"{MODULE}:broken", "name": "broken"}],
        *_orders("ORD-1", "ORD-2"),
        [("client_order_id", CHANGED, "ORD-1", "ORD-2", "")],
        id="a-raising-rule-tolerates-nothing",
    ),
    pytest.param(
        [{**SAME_BOOK, "callable": f"{MODULE}:Named", "name": "ignored"}],
        *_orders("ORD-1", "X"),
        [("client_order_id", CHANGED, "ORD-1", "X", "named by itself")],
        id="a-rule-naming-itself",
    ),
    pytest.param(
        [SAME_BOOK, {**SAME_BOOK, "path": "bank.v1.Trade.trade_id", "name": "same series"}],
        pb.Trade(trade_id="T-1", client_order_id="ORD-1"),
        pb.Trade(trade_id="T-2", client_order_id="ORD-2"),
        [
            ("trade_id", CHANGED, "T-1", "T-2", "same series"),
            ("client_order_id", CHANGED, "ORD-1", "ORD-2", "same book"),
        ],
        id="one-callable-in-two-rules-keeps-both-names",
    ),
]


@pytest.mark.parametrize(("specs", "bank", "bk", "expected"), CUSTOM_CASES)
def test_custom(specs: list[Spec], bank: Answer, bk: Answer, expected: list[Row]) -> None:
    """A `custom` rule is a callable named by its dotted path (a class gets `options`); it tolerates what it
    returns True for, and a rule that raises leaves the difference real."""
    check(specs, POST_TRADE, bank, bk, expected)


# ---- default names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        pytest.param({"path": "bank.v1.Trade.fee", "rule": "decimal"}, "decimal fee", id="path"),
        pytest.param({"path": "*.next_page_token", "rule": "ignore"}, "ignore next_page_token", id="glob"),
        pytest.param(
            {"regex": r"bank\.v1\.Trade\.(fee|price)", "rule": "decimal"}, r"decimal (fee|price)", id="regex"
        ),
        pytest.param(
            {"path": "bank.v1.Ledger/StreamLedgerEntries", "rule": "multiset"},
            "multiset StreamLedgerEntries",
            id="stream",
        ),
        pytest.param({"rule": "status", "details": "ignore"}, "status", id="status"),
        pytest.param({"path": "bank.v1.Trade.fee", "rule": "decimal", "name": "money"}, "money", id="given"),
    ],
)
def test_a_rule_without_a_name_is_named_by_its_kind_and_field(spec: Spec, name: str) -> None:
    """A rule's name (what a tolerated difference reports) defaults to its kind and the field it targets."""
    [binding] = build_rules([spec], REGISTRY, parse_duration).bindings
    assert binding.rule.name == name


# ---- traps ---------------------------------------------------------------------------------


def test_decimals_are_never_floats_in_differences() -> None:
    """The values in a difference are the decimal strings as sent, tolerated or not, never numbers."""
    comparison = judge(
        [DECIMAL],
        POST_TRADE,
        pb.Trade(quantity="10.000", price="0.1", fee="0.30000000000000004"),
        pb.Trade(quantity="10", price="0.10", fee="0.3"),
    )
    assert rows(comparison) == [
        ("quantity", CHANGED, "10.000", "10", "decimal"),
        ("price", CHANGED, "0.1", "0.10", "decimal"),
        ("fee", CHANGED, "0.30000000000000004", "0.3", ""),
    ]
    assert all(type(v) is str for d in comparison.differences for v in (d.bank, d.bk))


def test_messages_sharing_few_fields_are_never_collapsed_into_one_difference() -> None:
    """However little two answers share, each field is its own difference, each judged by its own rule."""
    comparison = judge(
        [VENUE, BY_SYMBOL],
        POST_TRADE,
        pb.Trade(symbol="AAPL", fee="0.01"),
        pb.Trade(venue="XNYS"),
    )
    assert rows(comparison) == [
        ("symbol", REMOVED, "AAPL", None, ""),
        ("fee", REMOVED, "0.01", None, ""),
        ("venue", ADDED, None, "XNYS", "venue"),
    ]
    disjoint = judge([BY_SYMBOL], GET_PORTFOLIO, _positions("AAPL", "KO"), _positions("MSFT"))
    assert [(path, kind) for path, kind, *_ in rows(disjoint)] == [
        ("positions[symbol=AAPL]", REMOVED),
        ("positions[symbol=KO]", REMOVED),
        ("positions[symbol=MSFT]", ADDED),
    ]


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        pytest.param([], [("labels[__x]", CHANGED, "ABC", "abc", "")], id="without-rules"),
        pytest.param(
            [{"path": "probe.v1.Reading.labels", "rule": "string", "name": "labels"}],
            [("labels[__x]", CHANGED, "ABC", "abc", "labels")],
            id="with-a-rule",
        ),
    ],
)
def test_map_keys_starting_with_underscores_are_compared(specs: list[Spec], expected: list[Row]) -> None:
    """A map key such as "__x" is compared like any other key, never skipped as private."""
    check(
        specs, READ, reading(labels={"__x": "ABC"}), reading(labels={"__x": "abc"}), expected, PROBE_REGISTRY
    )
