"""Comparing through the id map where the id spaces overlap: one text may be an id on both sides.

Bank's T5 is BK's T7 (the pair); BK naming "T5" where Bank names "T5" names BK's own T5, which is not
Bank's T5 (that is BK's T7): an unmapped-id difference, though the text is the same. Ids with no known
pair, and answers whose pairs change no id (the same id space on both sides by design), still match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2
from google.rpc import error_details_pb2, status_pb2

from comparators import Comparison, DescriptorRegistry, DiffKind, Outcome, Verdict, build_rules, compare
from comparators.ids import IdFields, IdKind
from comparators.redact import Redactor
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.units import parse_duration
from tests.comparators._exchanges import POST_TRADE, STREAM_ENTRIES, answer, exchange

SAMPLE = DescriptorRegistry.from_files([Path(__file__).resolve().parents[2] / "sample_ledger" / "bank.binpb"])
LIST_TRADES = "/bank.v1.Ledger/ListTrades"
TRADE = IdKind(
    "trade",
    minted=("bank.v1.Trade.trade_id",),
    references=("bank.v1.LedgerEntry.trade_id", "google.rpc.PreconditionFailure.Violation.subject"),
)
ACCOUNT = IdKind(
    "account",
    minted=("bank.v1.Account.account_id",),
    references=("google.rpc.PreconditionFailure.Violation.subject",),
)
T5_IS_BKS_T7 = ("trade", "T5", "T7")
Row = tuple[str, DiffKind, object, object]


def _fields(*kinds: IdKind) -> IdFields:
    return IdFields(kinds or (TRADE, ACCOUNT), SAMPLE)


def _judge(
    method: str,
    bank: Outcome,
    bk: Outcome,
    *pairs: tuple[str, str, str],
    rules: list[dict[str, Any]] | None = None,
    primary_is_bank: bool = True,
) -> Comparison:
    primary, shadow = (bank, bk) if primary_is_bank else (bk, bank)
    rule_set = build_rules(rules, SAMPLE, parse_duration) if rules else None
    made = exchange(method, primary, shadow, ids=pairs, primary_is_bank=primary_is_bank)
    return compare(made, SAMPLE, rule_set, _fields())


def _rows(comparison: Comparison) -> list[Row]:
    return [(d.path, d.kind, d.bank, d.bk) for d in comparison.differences]


def _trade(trade_id: str, **fields: Any) -> Outcome:
    return answer(pb.Trade(trade_id=trade_id, account_id="A1", **fields))


def test_bk_s_own_id_with_the_text_of_a_paired_bank_id_is_an_unmapped_id() -> None:
    """Bank's T5 is BK's T7; BK answering "T5" (its own, paired with nothing) is an unmapped id, with BK
    as the shadow or as the primary."""
    for primary_is_bank in (True, False):
        comparison = _judge(
            POST_TRADE, _trade("T5"), _trade("T5"), T5_IS_BKS_T7, primary_is_bank=primary_is_bank
        )
        assert comparison.verdict is Verdict.MISMATCH
        assert _rows(comparison) == [("trade_id", DiffKind.UNMAPPED_ID, "T5", "T5")]


def test_equal_texts_match_when_no_pair_says_otherwise() -> None:
    """No false alarm: BK naming the pair of Bank's id matches; an equal text no pair knows matches (read
    through the map, or at once when no pair changes an id: the same id space on both sides); a BK id
    paired with another Bank id is a change, as before."""
    assert (_judge(POST_TRADE, _trade("T5"), _trade("T7"), T5_IS_BKS_T7).verdict) is Verdict.MATCH
    other_pair = _judge(POST_TRADE, _trade("T5"), _trade("T5"), ("trade", "T1", "T2"))
    assert (other_pair.verdict, other_pair.differences, other_pair.decoded) == (Verdict.MATCH, (), True)
    for unchanged in ((), (("trade", "T5", "T5"),)):
        fast = _judge(POST_TRADE, _trade("T5"), _trade("T5"), *unchanged)
        assert (fast.verdict, fast.differences, fast.decoded) == (Verdict.MATCH, (), False)
    paired_elsewhere = _judge(POST_TRADE, _trade("T5"), _trade("T5"), T5_IS_BKS_T7, ("trade", "T9", "T5"))
    assert _rows(paired_elsewhere) == [("trade_id", DiffKind.CHANGED, "T5", "T9")]


def test_a_rule_tolerating_the_id_field_tolerates_it_there_too() -> None:
    """An ignored id field stays ignored: the difference is tolerated, the comparison a match."""
    ignored = [{"path": "bank.v1.Trade.trade_id", "rule": "ignore", "name": "ids"}]
    comparison = _judge(POST_TRADE, _trade("T5"), _trade("T5"), T5_IS_BKS_T7, rules=ignored)
    assert comparison.verdict is Verdict.MATCH
    assert [(d.path, d.bank, d.bk, d.rule) for d in comparison.differences] == [
        ("trade_id", "T5", "T5", "ids")
    ]


def test_in_a_list_keyed_by_id_bk_s_own_id_is_another_element() -> None:
    """Trades keyed by id: BK's T4 is Bank's T2 and pairs; BK's own T1 is not Bank's T1 (BK's T3): Bank's
    T1 is missing from BK's answer and BK's T1 is one more, each shown with the text its side sent."""
    keyed = [{"path": "bank.v1.ListTradesResponse.trades", "rule": "keyed", "key": ["trade_id"], "name": "k"}]

    def trades(*ids: str) -> Outcome:
        return answer(pb.ListTradesResponse(trades=[pb.Trade(trade_id=i, symbol="KO") for i in ids]))

    pairs = (("trade", "T1", "T3"), ("trade", "T2", "T4"))
    comparison = _judge(LIST_TRADES, trades("T1", "T2"), trades("T4", "T1"), *pairs, rules=keyed)
    assert comparison.verdict is Verdict.MISMATCH
    assert _rows(comparison) == [
        ("trades[trade_id=T1]", DiffKind.REMOVED, {"trade_id": "T1", "symbol": "KO"}, None),
        ("trades[trade_id=T1]", DiffKind.ADDED, None, {"trade_id": "T1", "symbol": "KO"}),
    ]


def _refused(*subjects: str) -> Outcome:
    detail = any_pb2.Any()
    violations = [error_details_pb2.PreconditionFailure.Violation(type="T", subject=s) for s in subjects]
    detail.Pack(error_details_pb2.PreconditionFailure(violations=violations))
    status = status_pb2.Status(code=9, message="refused", details=[detail])
    return Outcome(9, "refused", trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),))


def test_identical_rich_error_details_naming_bk_s_own_id_differ() -> None:
    """Byte-identical refusals naming "A1" in their rich details, where Bank's A1 is BK's A2: BK's A1 is not
    Bank's. A location two kinds share: the kind whose pair knows Bank's text tells."""
    path = "status.rich_details.details[0].violations[0].subject"
    comparison = _judge(
        POST_TRADE, _refused("A1", "T5"), _refused("A1", "T7"), ("account", "A1", "A2"), T5_IS_BKS_T7
    )
    assert comparison.verdict is Verdict.MISMATCH
    assert _rows(comparison) == [(path, DiffKind.UNMAPPED_ID, "A1", "A1")]


def test_a_redacted_id_of_bk_s_own_shows_as_hashes() -> None:
    """In a redacted id field, BK's own T5 against Bank's T5 is an unmapped id shown as the two hashes."""
    hide = Redactor(("bank.v1.LedgerEntry.trade_id",), SAMPLE, b"k")
    entry = answer(pb.LedgerEntry(sequence=1, trade_id="T5"))
    made = exchange(STREAM_ENTRIES, entry, entry, ids=(T5_IS_BKS_T7,))
    comparison = compare(made, SAMPLE, None, _fields(), hide)
    assert comparison.verdict is Verdict.MISMATCH
    assert _rows(comparison) == [("[0].trade_id", DiffKind.UNMAPPED_ID, hide.hash("T5"), hide.hash("T5"))]
    assert "T5" not in repr(comparison.differences)


def _serials() -> tuple[DescriptorRegistry, IdFields]:
    """A service whose answer holds an integer id (both sides count 1, 2, 3 ...)."""
    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="serial/v1/s.proto", package="serial.v1", syntax="proto3")
    item = file.message_type.add(name="Item")
    item.field.add(name="serial", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    item.field.add(name="note", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    file.service.add(name="Items").method.add(
        name="Get", input_type=".serial.v1.Item", output_type=".serial.v1.Item"
    )
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry, IdFields((IdKind("item", minted=("serial.v1.Item.serial",)),), registry)


def test_an_integer_id_of_bk_s_own_with_the_number_of_a_paired_bank_id_is_an_unmapped_id() -> None:
    """Both sides count: Bank's 5 is BK's 7. BK answering 5 (its own) is an unmapped id; 7 matches."""
    registry, fields = _serials()
    item = registry.message_class("serial.v1.Item")

    def judged(bank: int, bk: int) -> Comparison:
        made = exchange(
            "/serial.v1.Items/Get",
            answer(item(serial=bank)),
            answer(item(serial=bk)),
            ids=(("item", "5", "7"),),
        )
        return compare(made, registry, None, fields)

    own = judged(5, 5)
    assert own.verdict is Verdict.MISMATCH
    assert _rows(own) == [("serial", DiffKind.UNMAPPED_ID, 5, 5)]
    assert (judged(5, 7).verdict, judged(5, 7).differences) == (Verdict.MATCH, ())
