"""compare() with everything on (the sample's rules and ids, redaction, noise, taint) on random and mutated
bytes, random metadata and random stream lengths: always a verdict, never an exception."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import sample_ledger
from comparators import Exchange, Outcome, Verdict, build_rules, compare
from comparators.ids import IdFields, IdKind
from comparators.redact import Redactor
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.config import load_file, load_rules_file
from shim.units import parse_duration
from tests.comparators._exchanges import REGISTRY
from tests.comparators.test_compare_properties import metadata, outcomes, payloads

SAMPLE = Path(sample_ledger.__file__).parent
_SPECS, _LOCATIONS = load_rules_file(SAMPLE / "rules.toml")
RULES = build_rules(_SPECS, REGISTRY, parse_duration, _LOCATIONS)
KINDS: tuple[IdKind, ...] = load_file(SAMPLE / "shim.toml")["ids"]
IDS = IdFields(KINDS, REGISTRY)
REDACTOR = Redactor(
    tomllib.loads((SAMPLE / "shim.toml").read_text(encoding="utf-8"))["redact"]["fields"], REGISTRY, b"k"
)
METHODS = sorted(REGISTRY.methods)

# real answers of the sample, to be mutated
SEEDS = [
    pb.Trade(
        trade_id="T1", account_id="A", symbol="KO", quantity="3", price="10.5", fee="0.02"
    ).SerializeToString(),
    pb.ListTradesResponse(
        trades=[pb.Trade(trade_id=f"T{i}", fee="0.01") for i in range(3)], next_page_token="3"
    ).SerializeToString(),
    pb.Account(account_id="A", owner_name="Ada Lovelace").SerializeToString(),
    pb.SettlementReport(settled_trade_ids=["T1", "T2"], net_cash="-10.00").SerializeToString(),
    pb.LedgerEntry(sequence=1, trade_id="T1", amount="-1.00").SerializeToString(),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real answer with bytes flipped, cut, or inserted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


messages = st.one_of(payloads, mutated(), st.sampled_from(SEEDS))
answers = st.builds(
    Outcome,
    code=st.integers(0, 16),
    details=st.text(max_size=12),
    initial_metadata=metadata,
    trailing_metadata=metadata,
    messages=st.lists(messages, max_size=6).map(tuple),
)
id_pairs = st.lists(
    st.tuples(st.sampled_from(["trade", "page"]), st.text(max_size=4), st.text(max_size=4)), max_size=4
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    primary=answers,
    shadow=st.one_of(st.none(), answers, outcomes(local=st.just("shadow timeout after 2s"))),
    secondary=st.one_of(st.none(), answers),
    ids=id_pairs,
    tainted=st.sampled_from(["", "key 'A' out of step"]),
    unmapped=st.lists(
        st.tuples(st.just("trade"), st.just("request.trade_id"), st.text(max_size=4)), max_size=2
    ),
    requests=st.lists(messages, max_size=3).map(tuple),
    bank_primary=st.booleans(),
)
def test_compare_with_everything_on_never_raises(
    method: str,
    primary: Outcome,
    shadow: Outcome | None,
    secondary: Outcome | None,
    ids: tuple[tuple[str, str, str], ...],
    tainted: str,
    unmapped: list[tuple[str, str, str]],
    requests: tuple[bytes, ...],
    bank_primary: bool,
) -> None:
    """Rules, ids, redaction, noise and taint together on bytes that may not decode: a verdict always,
    a mismatch only with real differences, tainted only on a tainted exchange."""
    exchange = Exchange(
        method,
        requests,
        primary,
        shadow,
        primary_is_bank=bank_primary,
        ids=ids,
        tainted=tainted,
        unmapped=tuple(unmapped),
        secondary=secondary,
    )
    comparison = compare(exchange, REGISTRY, RULES, IDS, REDACTOR)
    assert isinstance(comparison.verdict, Verdict)
    if comparison.verdict is Verdict.MISMATCH:
        assert comparison.real_differences
    if comparison.verdict is Verdict.TAINTED:
        assert tainted
    assert all(isinstance(d.path, str) and d.path for d in (*comparison.differences, *comparison.noise))
