"""A probe service of odd shapes (tests/comparators/odd.proto), and comparing its answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comparators import Comparison, build_rules, compare
from shim.units import parse_duration
from tests.comparators._exchanges import answer, exchange
from tests.services._protoc import registry_of

HERE = Path(__file__).resolve().parent
REGISTRY = registry_of(HERE / "odd.proto")
GET = "/odd.v1.Odds/Get"
STREAM = "/odd.v1.Odds/Stream"
Odd = REGISTRY.message_class("odd.v1.Odd")
Leg = REGISTRY.message_class("odd.v1.Leg")
Money = REGISTRY.message_class("odd.v1.Money")
Amount = REGISTRY.message_class("odd.v1.Amount")
Timestamp = REGISTRY.message_class("google.protobuf.Timestamp")


def judge(bank: Any, bk: Any, specs: list[dict[str, Any]] | None = None, method: str = GET) -> Comparison:
    """Bank's answer against BK's (a message, or a stream's messages as a list) under the rules `specs`."""
    rules = build_rules(list(specs or ()), REGISTRY, parse_duration)
    sides = [answer(*side) if isinstance(side, list | tuple) else answer(side) for side in (bank, bk)]
    return compare(exchange(method, *sides), REGISTRY, rules)


def rows(comparison: Comparison) -> list[tuple[Any, ...]]:
    return [(d.path, d.kind.value, d.bank, d.bk, d.rule) for d in comparison.differences]


def compare_in_child(pairs: list[tuple[bytes, bytes]]) -> list[tuple[Any, ...]]:
    """In a worker process: compare each (Bank, BK) answer of odd.v1.Odds/Get and hand the verdicts and
    differences back, pickled, as the comparison pipeline's worker processes do."""
    rules = build_rules([], REGISTRY, parse_duration)
    out = []
    for bank, bk in pairs:
        c = compare(exchange(GET, answer(bank), answer(bk)), REGISTRY, rules)
        out.append((c.verdict, c.differences))
    return out
