"""Invariants of compare(), checked on generated answers: an answer matches itself, and nothing raises."""

from __future__ import annotations

from typing import Any

from google.protobuf import message, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from comparators import Outcome, Verdict, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.comparators._exchanges import REGISTRY, STATUS_DETAILS, UNDESCRIBED, exchange

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
    """Any answer (random messages, status code and details) compared with itself is a match."""
    registry = REGISTRY if described else None
    comparison = compare(exchange(method, outcome, outcome, primary_is_bank=bank_primary), registry)
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())


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
    """Two answers with the same status, details, messages and rich status match, whatever else differs."""
    same = Outcome(
        code=bank.code,
        details=bank.details,
        messages=bank.messages,
        trailing_metadata=tuple((k, v) for k, v in bank.trailing_metadata if k == STATUS_DETAILS),
        initial_metadata=bk.initial_metadata,
        latency=bk.latency,
    )
    comparison = compare(exchange(method, bank, same), REGISTRY if described else None)
    assert comparison.verdict is Verdict.MATCH


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
