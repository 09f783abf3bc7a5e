"""Invariants of compare(), checked on generated answers: an answer matches itself, and nothing raises."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import message, timestamp_pb2
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from comparators import Code, Comparison, DiffKind, Outcome, RuleSet, Verdict, build_rules, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.units import parse_duration
from tests.comparators._exchanges import REGISTRY, STATUS_DETAILS, UNDESCRIBED, exchange
from tests.comparators._probe import PROBE_REGISTRY, READ, reading

METHODS = [*sorted(REGISTRY.methods), UNDESCRIBED]
PROPERTIES = settings(max_examples=100, deadline=None)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


field_numbers = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 111])
scalar_fields = st.one_of(
    st.builds(lambda n, v: _tag(n, 0) + _varint(v), field_numbers, st.integers(0, 2**64 - 1)),
    st.builds(lambda n, v: _tag(n, 1) + v, field_numbers, st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, v: _tag(n, 5) + v, field_numbers, st.binary(min_size=4, max_size=4)),
    st.builds(
        lambda n, v: _tag(n, 2) + _varint(len(v)) + v, field_numbers, st.text(max_size=8).map(str.encode)
    ),
)


def _nested(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    body = st.lists(children, max_size=4).map(b"".join)
    return st.one_of(
        st.builds(lambda n, v: _tag(n, 2) + _varint(len(v)) + v, field_numbers, body),
        st.builds(lambda n, v: _tag(n, 3) + v + _tag(n, 4), field_numbers, body),
    )


# Bytes shaped like protobuf: known and unknown field numbers, every wire type, nested
# messages and groups; many decode as the ledger's messages, some with surprises.
wire_messages = st.lists(st.recursive(scalar_fields, _nested, max_leaves=8), max_size=6).map(b"".join)
payloads = st.one_of(st.binary(max_size=64), wire_messages)
metadata = st.lists(
    st.tuples(
        st.sampled_from([STATUS_DETAILS, "x-a-bin", "x-b"]), st.one_of(st.binary(max_size=16), payloads)
    ),
    max_size=3,
).map(tuple)


def outcomes(local: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Outcome]:
    """Answers with random bytes; `local` says what the shim did instead (default: nothing)."""
    return st.builds(
        Outcome,
        code=st.integers(0, 20),
        details=st.text(max_size=20),
        initial_metadata=metadata,
        trailing_metadata=metadata,
        messages=st.lists(payloads, max_size=3).map(tuple),
        latency=st.floats(0, 10),
        local=st.just("") if local is None else local,
    )


@PROPERTIES
@given(
    outcome=outcomes(),
    method=st.sampled_from(METHODS),
    described=st.booleans(),
    bank_primary=st.booleans(),
)
def test_an_answer_always_matches_itself(
    outcome: Outcome, method: str, described: bool, bank_primary: bool
) -> None:
    """Any answer (random messages, status code and details) compared with itself is a match; but for
    UNAVAILABLE before any answer, which is no answer (the primary never received the call), and a failure
    (a status neither OK nor a refusal), which on both sides is no agreement."""
    registry = REGISTRY if described else None
    comparison = compare(exchange(method, outcome, outcome, primary_is_bank=bank_primary), registry)
    never_received = outcome.code == Code.UNAVAILABLE and not outcome.messages
    expected = Verdict.SKIPPED if never_received or outcome.failed else Verdict.MATCH
    assert (comparison.verdict, comparison.differences) == (expected, ())


@PROPERTIES
@given(
    bank=outcomes(),
    bk=outcomes(),
    method=st.sampled_from(METHODS),
    described=st.booleans(),
)
def test_an_answer_matches_itself_whatever_its_latency_and_ordinary_metadata(
    bank: Outcome, bk: Outcome, method: str, described: bool
) -> None:
    """Two answers with the same status, details, messages, rich status and metadata match, whatever else
    differs (unless both are failures: no agreement): latency, whether a key came as a header or a trailer,
    keys only BK sends, and what proxies and gRPC add (`date`, `x-envoy-*`)."""
    bank_keys = {k for k, _ in (*bank.initial_metadata, *bank.trailing_metadata)}
    extra = [(k, v) for k, v in bk.initial_metadata if k not in bank_keys and k != STATUS_DETAILS]
    headers = [(k, v) for k, v in bank.initial_metadata if k != STATUS_DETAILS]  # sent as trailers instead
    kept = [(k, v) for k, v in bank.initial_metadata if k == STATUS_DETAILS]
    same = Outcome(
        code=bank.code,
        details=bank.details,
        messages=bank.messages,
        initial_metadata=(("date", "Sun, 06 Dec 2026 17:40:00 GMT"), *extra, *kept),
        trailing_metadata=(*headers, *bank.trailing_metadata, ("x-envoy-upstream-service-time", "3")),
        latency=bk.latency,
    )
    comparison = compare(exchange(method, bank, same), REGISTRY if described else None)
    never_received = bank.code == Code.UNAVAILABLE and not bank.messages  # no answer: nothing compared
    assert comparison.verdict is (Verdict.SKIPPED if never_received or bank.failed else Verdict.MATCH)


@PROPERTIES
@given(
    primary=outcomes(),
    shadow=st.one_of(st.none(), outcomes(local=st.sampled_from(["", "shadow timeout after 2s"]))),
    method=st.sampled_from(METHODS),
    described=st.booleans(),
    bank_primary=st.booleans(),
    cancelled=st.booleans(),
    is_write=st.booleans(),
)
def test_compare_never_raises_on_arbitrary_bytes(
    primary: Outcome,
    shadow: Outcome | None,
    method: str,
    described: bool,
    bank_primary: bool,
    cancelled: bool,
    is_write: bool,
) -> None:
    """Arbitrary bytes on either side, with or without descriptors, give a verdict, never an exception."""
    ex = exchange(
        method, primary, shadow, primary_is_bank=bank_primary, cancelled=cancelled, is_write=is_write
    )
    comparison = compare(ex, REGISTRY if described else None)
    assert isinstance(comparison.verdict, Verdict)
    assert all(isinstance(d.path, str) and d.path for d in comparison.differences)
    if comparison.verdict is Verdict.MISMATCH:
        assert comparison.real_differences
    if comparison.verdict is Verdict.MATCH:
        assert not comparison.real_differences


@PROPERTIES
@given(raw=wire_messages, method=st.sampled_from(sorted(REGISTRY.methods)))
def test_a_message_matches_its_own_reencoding(raw: bytes, method: str) -> None:
    """Bytes that decode match the bytes protobuf writes for the same message (the values are compared)."""
    info = REGISTRY.method(method)
    assert info is not None
    decoded = REGISTRY.message_class(info.output_type)()
    try:
        decoded.ParseFromString(raw)
    except message.DecodeError:
        return
    reencoded = decoded.SerializeToString()
    comparison = compare(
        exchange(method, Outcome(0, messages=(raw,)), Outcome(0, messages=(reencoded,))), REGISTRY
    )
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())


texts = st.text(max_size=6)
timestamps = st.builds(
    timestamp_pb2.Timestamp, seconds=st.integers(-(2**40), 2**40), nanos=st.integers(0, 999_999_999)
)
trades = st.builds(
    pb.Trade,
    trade_id=texts,
    symbol=texts,
    side=st.integers(0, 4),
    quantity=texts,
    fee=texts,
    booked_at=timestamps,
    status=st.integers(0, 3),
)
portfolios = st.builds(
    pb.Portfolio,
    account_id=texts,
    positions=st.lists(st.builds(pb.Position, symbol=texts, quantity=texts, cost_basis=texts), max_size=3),
    as_of=timestamps,
)
MESSAGES: dict[type[Any], str] = {
    pb.Trade: "/bank.v1.Ledger/PostTrade",
    pb.Portfolio: "/bank.v1.Ledger/GetPortfolio",
}


@PROPERTIES
@given(msg=st.one_of(trades, portfolios), data=st.data())
def test_fields_in_another_order_on_the_wire_still_match(msg: message.Message, data: st.DataObject) -> None:
    """The same fields written in any order on the wire are the same answer."""
    chunks = []
    for field, value in msg.ListFields():
        single = type(msg)()
        if field.message_type is not None and not field.is_repeated:
            getattr(single, field.name).CopyFrom(value)
        elif field.message_type is not None:
            getattr(single, field.name).extend(value)
        else:
            setattr(single, field.name, value)
        chunks.append(single.SerializeToString())
    shuffled = b"".join(data.draw(st.permutations(chunks)))
    ex = exchange(
        MESSAGES[type(msg)], Outcome(0, messages=(msg.SerializeToString(),)), Outcome(0, messages=(shuffled,))
    )
    assert compare(ex, REGISTRY).verdict is Verdict.MATCH


# ---- ledger messages: themselves, re-encoded, shuffled, changed in one leaf -------------------

list_trades = st.builds(pb.ListTradesResponse, trades=st.lists(trades, max_size=3), next_page_token=texts)
readings = st.builds(
    lambda labels, **fields: reading(labels=labels, **{k: v for k, v in fields.items() if v is not None}),
    rate=st.floats(),
    labels=st.dictionaries(texts, texts, max_size=4),
    samples=st.lists(st.floats(), max_size=3),
    wrapped=st.none() | st.builds(lambda v: {"value": v}, st.floats()),
    note=st.none() | texts,
    levels=st.lists(st.integers(0, 3), max_size=3),
)
LEDGER_METHODS: dict[str, str] = {
    "bank.v1.Trade": "/bank.v1.Ledger/PostTrade",
    "bank.v1.Portfolio": "/bank.v1.Ledger/GetPortfolio",
    "bank.v1.ListTradesResponse": "/bank.v1.Ledger/ListTrades",
    "probe.v1.Reading": READ,
}
SMALL = settings(max_examples=60, deadline=None)
M = TypeVar("M", bound=message.Message)


def reversed_wire(msg: message.Message) -> bytes:
    """The message with its fields written last to first, nested messages and map entries too."""
    chunks = []
    for field, value in reversed(msg.ListFields()):
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            for key in reversed(list(value)):
                single = type(msg)()
                getattr(single, field.name)[key] = value[key]
                chunks.append(single.SerializeToString())
        elif entry is not None:
            for item in value if field.is_repeated else [value]:
                body = reversed_wire(item)
                chunks.append(_tag(field.number, 2) + _varint(len(body)) + body)
        else:
            single = type(msg)()
            if field.is_repeated:
                getattr(single, field.name).extend(value)
            else:
                setattr(single, field.name, value)
            chunks.append(single.SerializeToString())
    return b"".join(chunks)


def _judge(msg: message.Message, bank: bytes, bk: bytes, rules: RuleSet | None = None) -> Comparison:
    method = LEDGER_METHODS[msg.DESCRIPTOR.full_name]
    registry = PROBE_REGISTRY if method == READ else REGISTRY
    return compare(
        exchange(method, Outcome(0, messages=(bank,)), Outcome(0, messages=(bk,))), registry, rules
    )


@SMALL
@given(msg=st.one_of(trades, portfolios, list_trades, readings))
def test_a_message_matches_itself_and_itself_written_backwards(msg: message.Message) -> None:
    """Any ledger (or probe) message matches itself, and its fields written in reverse order on the wire
    (nested ones and map entries too): the same answer, with no difference at all."""
    raw = msg.SerializeToString()
    for other in (raw, reversed_wire(msg), msg.SerializeToString(deterministic=True)):
        comparison = _judge(msg, raw, other)
        assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())


BY_SYMBOL = build_rules(
    [{"path": "bank.v1.Portfolio.positions", "rule": "keyed", "key": ["symbol"]}], REGISTRY, parse_duration
)
unique_positions = st.lists(
    st.builds(pb.Position, symbol=texts, quantity=texts, average_price=texts, cost_basis=texts),
    max_size=5,
    unique_by=lambda p: p.symbol,
)
POSITION_LEAVES = ["account_id", "quantity", "average_price", "cost_basis"]


@SMALL
@given(positions=unique_positions, data=st.data())
def test_positions_in_any_order_match_under_the_keyed_rule(
    positions: list[pb.Position], data: st.DataObject
) -> None:
    """Positions in another order match under `keyed` by symbol, with no difference at all."""
    shuffled = data.draw(st.permutations(positions))
    bank, bk = pb.Portfolio(positions=positions), pb.Portfolio(positions=shuffled)
    comparison = _judge(bank, bank.SerializeToString(), bk.SerializeToString(), BY_SYMBOL)
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())


def _expected_kind(old: object, new: object, default: object) -> DiffKind:
    if old == default:
        return DiffKind.ADDED
    return DiffKind.REMOVED if new == default else DiffKind.CHANGED


def _shown(msg: message.Message, name: str, value: Any) -> object:
    """A field's value as a difference shows it: None for unset, enums by name."""
    field = msg.DESCRIPTOR.fields_by_name[name]
    if value == field.default_value:
        return None
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value


def _one_leaf_changed(data: st.DataObject, msg: M, names: list[str]) -> tuple[str, object, object, M]:
    """A copy of `msg` with one scalar field set to another value: (field, old, new, copy)."""
    name = data.draw(st.sampled_from(names))
    old = getattr(msg, name)
    values = st.integers(0, 4) if isinstance(old, int) else texts
    new = data.draw(values.filter(lambda v: v != old))
    changed = type(msg)()
    changed.CopyFrom(msg)
    setattr(changed, name, new)
    return name, old, new, changed


def _assert_one_difference(
    comparison: Comparison, path: str, msg: message.Message, name: str, old: object, new: object
) -> None:
    [difference] = comparison.differences
    default = msg.DESCRIPTOR.fields_by_name[name].default_value
    assert (difference.path, difference.kind) == (path, _expected_kind(old, new, default))
    assert (difference.bank, difference.bk) == (_shown(msg, name, old), _shown(msg, name, new))
    assert comparison.verdict is Verdict.MISMATCH


TRADE_LEAVES = [f.name for f in pb.Trade.DESCRIPTOR.fields if f.message_type is None]


@SMALL
@given(trade=trades, data=st.data())
def test_one_changed_leaf_of_a_trade_is_one_difference_at_its_path(
    trade: pb.Trade, data: st.DataObject
) -> None:
    """Changing exactly one scalar field of a Trade gives exactly one difference, at that field, holding
    the old and new values (added/removed when one of them is the default)."""
    name, old, new, changed = _one_leaf_changed(data, trade, TRADE_LEAVES)
    comparison = _judge(trade, trade.SerializeToString(), changed.SerializeToString())
    _assert_one_difference(comparison, name, trade, name, old, new)


@SMALL
@given(response=list_trades, data=st.data())
def test_one_changed_leaf_in_a_list_is_one_difference_at_its_index(
    response: pb.ListTradesResponse, data: st.DataObject
) -> None:
    """Changing one scalar field of one listed Trade gives one difference at `trades[i].field`."""
    assume(len(response.trades) > 0)
    index = data.draw(st.integers(0, len(response.trades) - 1))
    name, old, new, changed = _one_leaf_changed(data, response.trades[index], TRADE_LEAVES)
    other = pb.ListTradesResponse()
    other.CopyFrom(response)
    other.trades[index].CopyFrom(changed)
    comparison = _judge(response, response.SerializeToString(), other.SerializeToString())
    _assert_one_difference(comparison, f"trades[{index}].{name}", changed, name, old, new)


@SMALL
@given(positions=unique_positions, data=st.data())
def test_one_changed_position_is_one_difference_at_its_key(
    positions: list[pb.Position], data: st.DataObject
) -> None:
    """Shuffled positions with one scalar field changed in one of them give exactly one difference, at
    `positions[symbol=S].field`, under `keyed` by symbol."""
    assume(len(positions) > 0)
    shuffled = list(data.draw(st.permutations(positions)))
    index = data.draw(st.integers(0, len(shuffled) - 1))
    name, old, new, changed = _one_leaf_changed(data, shuffled[index], POSITION_LEAVES)
    shuffled[index] = changed
    bank, bk = pb.Portfolio(positions=positions), pb.Portfolio(positions=shuffled)
    comparison = _judge(bank, bank.SerializeToString(), bk.SerializeToString(), BY_SYMBOL)
    _assert_one_difference(comparison, f"positions[symbol={changed.symbol}].{name}", changed, name, old, new)
