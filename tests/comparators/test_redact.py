"""Redaction: sensitive values are replaced by keyed hashes before anything is compared or shown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, descriptor_pb2, message
from google.rpc import error_details_pb2, status_pb2

from comparators import (
    Comparison,
    DescriptorRegistry,
    DiffKind,
    Exchange,
    Outcome,
    Verdict,
    build_rules,
    compare,
)
from comparators.ids import IdFields, IdKind
from comparators.redact import PREFIX, FreeText, RedactError, Redactor
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.units import parse_duration
from tests.comparators._odd import GET, Amount, Odd
from tests.comparators._odd import REGISTRY as ODD
from tests.services.custody import REGISTRY as CUSTODY
from tests.services.custody.messages import message_class

REGISTRY = DescriptorRegistry.from_files(
    [Path(__file__).resolve().parents[2] / "sample_ledger" / "bank.binpb"]
)
OWNER = "bank.v1.Account.owner_name"
LIST_ACCOUNTS = "/bank.v1.Ledger/ListAccounts"


def redactor(*fields: str, key: bytes = b"k") -> Redactor:
    return Redactor(fields or (OWNER,), REGISTRY, key)


@pytest.mark.parametrize(
    ("field", "error"),
    [
        ("bank.v1.Nope.owner_name", "redact.fields[0]: 'bank.v1.Nope.owner_name' names no message field"),
        ("bank.v1.Account.nope", "redact.fields[0]: bank.v1.Account has no field 'nope'"),
        ("bank.v1.Trade.side", "redact.fields[0]: bank.v1.Trade.side is not a string or bytes field"),
        ("bank.v1.Account.opened_at", "redact.fields[0]: bank.v1.Account.opened_at is not a string or bytes"),
    ],
)
def test_only_string_or_bytes_fields_of_the_descriptors_can_be_redacted(field: str, error: str) -> None:
    """A redacted field must exist and hold text or bytes; the error names the setting."""
    with pytest.raises(RedactError) as caught:
        redactor(field)
    assert str(caught.value).startswith(error)


def test_an_empty_key_is_refused() -> None:
    """The keyed hash needs a key."""
    with pytest.raises(RedactError):
        Redactor((OWNER,), REGISTRY, b"")


def test_values_are_replaced_at_any_depth_and_equal_values_hash_alike() -> None:
    """Every owner name in a listing is replaced; equal names give equal hashes, others differ; the key
    changes the hash; unset values stay unset."""
    answer = pb.ListAccountsResponse(
        accounts=[
            pb.Account(account_id="A1", owner_name="Ada"),
            pb.Account(account_id="A2", owner_name="Ada"),
            pb.Account(account_id="A3", owner_name="Bob"),
            pb.Account(account_id="A4"),
        ]
    )
    redactor().redact(answer)
    names = [a.owner_name for a in answer.accounts]
    assert all(n.startswith(PREFIX) for n in names[:3])
    assert names[0] == names[1] != names[2]
    assert names[3] == ""
    assert [a.account_id for a in answer.accounts] == ["A1", "A2", "A3", "A4"]
    assert redactor(key=b"other").hash("Ada") != names[0]
    assert "Ada" not in str(answer)


def test_redacted_bytes_of_a_message_and_undecodable_bytes() -> None:
    """A serialized message comes back redacted; bytes that do not decode come back as None."""
    raw = pb.Account(account_id="A1", owner_name="Ada Lovelace").SerializeToString()
    kept = redactor().redact_bytes(pb.Account, raw)
    assert kept is not None
    assert b"Lovelace" not in kept
    assert pb.Account.FromString(kept).account_id == "A1"
    assert redactor().redact_bytes(pb.Account, b"\xff\xff\xff") is None


def _exchange(bank: bytes, bk: bytes) -> Exchange:
    return Exchange(LIST_ACCOUNTS, (b"",), Outcome(0, messages=(bank,)), Outcome(0, messages=(bk,)))


def test_a_comparison_sees_a_redacted_difference_without_its_values() -> None:
    """BK's owner differs from Bank's: the difference is found, shown as two hashes; equal owners match."""
    bank = pb.ListAccountsResponse(accounts=[pb.Account(account_id="A1", owner_name="Ada Lovelace")])
    bk = pb.ListAccountsResponse(accounts=[pb.Account(account_id="A1", owner_name="ADA LOVELACE")])
    comparison = compare(
        _exchange(bank.SerializeToString(), bk.SerializeToString()), REGISTRY, redactor=redactor()
    )
    assert comparison.verdict is Verdict.MISMATCH
    (difference,) = comparison.differences
    assert difference.path == "accounts[0].owner_name"
    assert str(difference.bank).startswith(PREFIX)
    assert str(difference.bk).startswith(PREFIX)
    assert "Lovelace" not in repr(comparison.differences)
    same = compare(
        _exchange(bank.SerializeToString(), bank.SerializeToString() + b""), REGISTRY, redactor=redactor()
    )
    assert same.verdict is Verdict.MATCH


def _accounts(*owners: str) -> bytes:
    """A listing of one account per owner, each with the id of its owner's (whatever the name's case)."""
    ids = {"ada lovelace": "A1", "grace hopper": "A2"}
    accounts = [pb.Account(account_id=ids.get(owner.casefold(), "A9"), owner_name=owner) for owner in owners]
    return pb.ListAccountsResponse(accounts=accounts).SerializeToString()


STRING_OWNER = {"path": OWNER, "rule": "string", "name": "name case"}
SAME_OWNER = {
    "path": "bank.v1.ListAccountsResponse.accounts",
    "rule": "custom",
    "callable": "tests.comparators._custom_rules:same_owner",
}
ACCOUNTS_IN_ANY_ORDER = {"path": "bank.v1.ListAccountsResponse.accounts", "rule": "multiset"}


@pytest.mark.parametrize(
    ("specs", "bank", "bk"),
    [
        pytest.param([STRING_OWNER], ("Ada Lovelace",), ("ADA LOVELACE",), id="string"),
        pytest.param([SAME_OWNER], ("Ada Lovelace",), ("ADA LOVELACE",), id="custom-on-the-message"),
        pytest.param(
            [ACCOUNTS_IN_ANY_ORDER, STRING_OWNER],
            ("Ada Lovelace", "Grace Hopper"),
            ("GRACE HOPPER", "ADA LOVELACE"),
            id="multiset-pairs-by-the-values",
        ),
    ],
)
def test_a_rule_on_a_redacted_field_judges_the_values_as_sent(
    specs: list[dict[str, Any]], bank: tuple[str, ...], bk: tuple[str, ...]
) -> None:
    """Rules judge the values as they were sent; the differences, and so the log, the store and the
    reports, show only hashes. Before, the rules saw the hashes: turning redaction on made a rule on a
    redacted field tolerate nothing, and every call where it had a mismatch."""
    hide = redactor()
    rules = build_rules(specs, REGISTRY, parse_duration)
    comparison = compare(_exchange(_accounts(*bank), _accounts(*bk)), REGISTRY, rules, redactor=hide)
    assert comparison.verdict is Verdict.MATCH, comparison.differences
    assert comparison.differences
    assert all(d.rule for d in comparison.differences)
    shown = repr(comparison.differences)
    assert not any(name in shown for name in ("Lovelace", "LOVELACE", "Hopper", "HOPPER"))
    assert hide.hash("Ada Lovelace") in shown
    other = compare(
        _exchange(_accounts(*bank), _accounts("Ada Byron", "Ada Byron")), REGISTRY, rules, redactor=hide
    )
    assert other.verdict is Verdict.MISMATCH
    assert "Byron" not in repr(other.differences)


def test_a_decimal_rule_on_a_redacted_amount_judges_the_amounts_as_sent() -> None:
    """A redacted fee under `decimal`: "1.50" against "1.5" is tolerated, "1.5" against "2" is not; both
    show hashes."""
    hide = Redactor(("bank.v1.Trade.fee",), REGISTRY, b"k")
    rules = build_rules([{"path": "bank.v1.Trade.fee", "rule": "decimal"}], REGISTRY, parse_duration)

    def trade(fee: str) -> Outcome:
        return Outcome(0, messages=(pb.Trade(trade_id="T1", fee=fee).SerializeToString(),))

    def judged(bank: str, bk: str) -> Comparison:
        return compare(
            Exchange("/bank.v1.Ledger/PostTrade", (b"",), trade(bank), trade(bk)),
            REGISTRY,
            rules,
            redactor=hide,
        )

    tolerated = judged("1.50", "1.5")
    assert tolerated.verdict is Verdict.MATCH
    assert [(d.bank, d.bk) for d in tolerated.differences] == [(hide.hash("1.50"), hide.hash("1.5"))]
    assert judged("1.5", "2").verdict is Verdict.MISMATCH
    # a money message whose amount is redacted: compared as "<currency> <amount>", as sent
    odd = Redactor(("odd.v1.Amount.value",), ODD, b"k")
    money = build_rules([{"path": "odd.v1.Odd.amount", "rule": "decimal"}], ODD, parse_duration)

    def amount(value: str) -> Outcome:
        return Outcome(
            0, messages=(Odd(amount=Amount(value=value, currency_code="USD")).SerializeToString(),)
        )

    found = compare(Exchange(GET, (b"",), amount("1.50"), amount("1.5")), ODD, money, redactor=odd)
    assert found.verdict is Verdict.MATCH
    assert [(d.bank, d.bk) for d in found.differences] == [
        (f"USD {odd.hash('1.50')}", f"USD {odd.hash('1.5')}")
    ]


def test_with_redaction_undecodable_answers_show_only_their_size() -> None:
    """Bytes that do not decode could hold a sensitive value: their content is not shown."""
    bank = pb.ListAccountsResponse(accounts=[pb.Account(owner_name="Ada Lovelace")]).SerializeToString()
    comparison = compare(_exchange(bank, b"\xffAda Lovelace"), REGISTRY, redactor=redactor())
    (difference,) = comparison.differences
    assert difference.kind is DiffKind.UNDECODABLE
    assert difference.bk == "<13 bytes, not shown: redaction is on>"
    plain = compare(_exchange(bank, b"\xffAda Lovelace"), REGISTRY)
    assert plain.differences[0].bk == b"\xffAda Lovelace".hex()


TRADE_ID = "bank.v1.LedgerEntry.trade_id"
STATUS_MESSAGE = "google.rpc.Status.message"
STREAM_ENTRIES = "/bank.v1.Ledger/StreamLedgerEntries"


def _trade_ids() -> IdFields:
    return IdFields(
        (IdKind("trade", minted=("bank.v1.Trade.trade_id",), references=(TRADE_ID, STATUS_MESSAGE)),),
        REGISTRY,
    )


def _entries(bank_id: str, bk_id: str, *pairs: tuple[str, str, str]) -> Exchange:
    def entry(trade_id: str) -> Outcome:
        return Outcome(0, messages=(pb.LedgerEntry(sequence=1, trade_id=trade_id).SerializeToString(),))

    return Exchange(STREAM_ENTRIES, (b"",), entry(bank_id), entry(bk_id), ids=pairs)


def _refused(bank_id: str, bk_id: str, *pairs: tuple[str, str, str]) -> Exchange:
    """Rich error details (google.rpc.Status) whose message is the trade's id."""

    def refusal(trade_id: str) -> Outcome:
        status = status_pb2.Status(code=5, message=trade_id)
        trailer = (("grpc-status-details-bin", status.SerializeToString()),)
        return Outcome(5, "not found", trailing_metadata=trailer)

    return Exchange(STREAM_ENTRIES, (b"",), refusal(bank_id), refusal(bk_id), ids=pairs)


@pytest.mark.parametrize(
    ("make", "path"),
    [(_entries, "[0].trade_id"), (_refused, "status.rich_details.message")],
)
def test_a_redacted_id_compares_through_the_id_map_and_shows_only_hashes(
    make: Callable[..., Exchange], path: str
) -> None:
    """A field that holds ids and is redacted: BK's id is read as the Bank id it pairs with, then both are
    hashed, so a mapped pair matches (in answers and in rich error details); an unpaired BK id is still an
    unmapped id, and a BK id paired with another Bank id a change, each shown as hashes only."""
    fields, hide = _trade_ids(), redactor(TRADE_ID, STATUS_MESSAGE)
    pair, other = ("trade", "T1", "trd_1"), ("trade", "T2", "trd_2")
    mapped = compare(make("T1", "trd_1", pair), REGISTRY, None, fields, hide)
    assert (mapped.verdict, mapped.differences) == (Verdict.MATCH, ())
    unmapped = compare(make("T1", "trd_9", pair), REGISTRY, None, fields, hide)
    changed = compare(make("T1", "trd_2", pair, other), REGISTRY, None, fields, hide)
    assert [(d.path, d.kind, d.bank, d.bk) for d in unmapped.differences] == [
        (path, DiffKind.UNMAPPED_ID, hide.hash("T1"), hide.hash("trd_9"))
    ]
    assert [(d.path, d.kind, d.bank, d.bk) for d in changed.differences] == [
        (path, DiffKind.CHANGED, hide.hash("T1"), hide.hash("T2"))
    ]
    for comparison in (unmapped, changed):
        assert comparison.verdict is Verdict.MISMATCH
        shown = repr(comparison.differences)
        assert not any(clear in shown for clear in ("'T1'", "'T2'", "trd_"))


# -- google.protobuf.Any: rich error details and Any fields of answers ------------------------------------

SUBJECT = "google.rpc.PreconditionFailure.Violation.subject"
HOLDERS_GET = "/test.v1.Holders/Get"
UNKNOWN_URL = "type.googleapis.com/elsewhere.v1.Secret"


def _with_holder() -> DescriptorRegistry:
    """The sample's descriptors and a service whose answer holds Any fields (one, and a list)."""
    registry = DescriptorRegistry.from_files(
        [Path(__file__).resolve().parents[2] / "sample_ledger" / "bank.binpb"]
    )
    file = descriptor_pb2.FileDescriptorProto(
        name="test/holder.proto", package="test.v1", syntax="proto3", dependency=["google/protobuf/any.proto"]
    )
    holder = file.message_type.add(name="Holder")
    optional, repeated = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    string, msg = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    )
    holder.field.add(name="note", number=1, type=string, label=optional)
    holder.field.add(name="extra", number=2, type=msg, label=optional, type_name=".google.protobuf.Any")
    holder.field.add(name="more", number=3, type=msg, label=repeated, type_name=".google.protobuf.Any")
    file.service.add(name="Holders").method.add(
        name="Get", input_type=".test.v1.Holder", output_type=".test.v1.Holder"
    )
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


HOLDERS = _with_holder()


def _packed(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _refusal(owner: str, message_text: str = "refused") -> Outcome:
    """FAILED_PRECONDITION with rich details: a standard detail and one of the service's own types."""
    violation = error_details_pb2.PreconditionFailure.Violation(type="OWNER", subject=owner, description="x")
    status = status_pb2.Status(code=9, message=message_text)
    status.details.extend(
        [
            _packed(error_details_pb2.PreconditionFailure(violations=[violation])),
            _packed(pb.Account(account_id="A1", owner_name=owner)),
        ]
    )
    return Outcome(9, "refused", trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),))


def test_redacted_fields_in_any_of_rich_error_details_show_only_hashes() -> None:
    """A redacted field packed in google.rpc.Status details (a standard detail, a detail of the service's
    own type) is hashed like any other: a difference there shows two hashes, equal values match."""
    hide = Redactor((OWNER, SUBJECT), REGISTRY, b"k")
    differing = Exchange(LIST_ACCOUNTS, (b"",), _refusal("Ada Lovelace"), _refusal("ADA LOVELACE"))
    comparison = compare(differing, REGISTRY, redactor=hide)
    assert comparison.verdict is Verdict.MISMATCH
    assert sorted((d.path, d.bank, d.bk) for d in comparison.differences) == [
        (
            "status.rich_details.details[0].violations[0].subject",
            hide.hash("Ada Lovelace"),
            hide.hash("ADA LOVELACE"),
        ),
        ("status.rich_details.details[1].owner_name", hide.hash("Ada Lovelace"), hide.hash("ADA LOVELACE")),
    ]
    alike = Exchange(LIST_ACCOUNTS, (b"",), _refusal("Ada Lovelace"), _refusal("Ada Lovelace", "other"))
    same = compare(alike, REGISTRY, redactor=hide)
    assert [d.path for d in same.differences] == ["status.rich_details.message"]
    for shown in (repr(comparison.differences), repr(same.differences)):
        assert "Lovelace" not in shown
        assert "LOVELACE" not in shown


def _holder_answer(owner: str, secret: bytes, note: str = "n") -> bytes:
    holder = HOLDERS.message_class("test.v1.Holder")()
    holder.note = note
    holder.extra.Pack(pb.Account(account_id="A1", owner_name=owner))
    holder.more.add(type_url=UNKNOWN_URL, value=secret)
    return holder.SerializeToString()


def test_redacted_fields_in_any_fields_of_an_answer_show_only_hashes() -> None:
    """An Any field of an answer: a packed type the descriptors know is unpacked, redacted and packed
    again; one they do not know could hold anything and is hashed whole. Equal values still match."""
    hide = Redactor((OWNER,), HOLDERS, b"k")
    secret = b"\n\x0cAda Lovelace"
    bank = Outcome(0, messages=(_holder_answer("Ada Lovelace", secret),))
    bk = Outcome(0, messages=(_holder_answer("ADA LOVELACE", secret + b"!"),))
    comparison = compare(Exchange(HOLDERS_GET, (b"",), bank, bk), HOLDERS, redactor=hide)
    assert comparison.verdict is Verdict.MISMATCH
    assert sorted((d.path, d.bank, d.bk) for d in comparison.differences) == [
        ("extra.owner_name", hide.hash("Ada Lovelace"), hide.hash("ADA LOVELACE")),
        ("more[0].value", hide.hash(secret).encode(), hide.hash(secret + b"!").encode()),
    ]
    assert "Lovelace" not in repr(comparison.differences)
    assert "LOVELACE" not in repr(comparison.differences)
    alike = Outcome(0, messages=(_holder_answer("Ada Lovelace", secret, note="other"),))
    same = compare(Exchange(HOLDERS_GET, (b"",), bank, alike), HOLDERS, redactor=hide)
    assert [d.path for d in same.differences] == ["note"]


def test_stored_messages_and_status_details_hold_no_value_packed_in_an_any() -> None:
    """What is stored or recorded (redact_bytes) hides a value packed in an Any: a known type's field
    as its hash, an unknown type's bytes as the hash of all of them."""
    hide = Redactor((OWNER, SUBJECT), HOLDERS, b"k")
    secret = b"\n\x0cAda Lovelace"
    kept = hide.redact_bytes(HOLDERS.message_class("test.v1.Holder"), _holder_answer("Ada Lovelace", secret))
    assert kept is not None
    assert b"Lovelace" not in kept
    holder = HOLDERS.message_class("test.v1.Holder").FromString(kept)
    account = pb.Account()
    assert holder.extra.Unpack(account)
    assert (account.account_id, account.owner_name) == ("A1", hide.hash("Ada Lovelace"))
    assert (holder.more[0].type_url, holder.more[0].value) == (UNKNOWN_URL, hide.hash(secret).encode())
    raw = _refusal("Ada Lovelace").trailer("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    details = hide.redact_bytes(status_pb2.Status, raw)
    assert details is not None
    assert b"Lovelace" not in details
    status = status_pb2.Status.FromString(details)
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject == hide.hash("Ada Lovelace")


def _notes_registry() -> DescriptorRegistry:
    """rd.v1.Notes{map<string, string> by_account; map<string, bytes> blobs}, answered by rd.v1.S/Get."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="rd/v1/notes.proto", package="rd.v1", syntax="proto3")
    notes = file.message_type.add(name="Notes")
    for number, (name, value_type) in enumerate(
        [("by_account", field.TYPE_STRING), ("blobs", field.TYPE_BYTES)], 1
    ):
        entry_name = "".join(part.title() for part in name.split("_")) + "Entry"
        notes.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            label=field.LABEL_REPEATED,
            type_name=f".rd.v1.Notes.{entry_name}",
        )
        entry = notes.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=value_type, label=field.LABEL_OPTIONAL)
    file.service.add(name="S").method.add(name="Get", input_type=".rd.v1.Notes", output_type=".rd.v1.Notes")
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet(file=[file]))
    return registry


NOTES = _notes_registry()
BY_ACCOUNT, BLOBS = "rd.v1.Notes.ByAccountEntry.value", "rd.v1.Notes.BlobsEntry.value"


def _notes(by_account: dict[str, str], blobs: dict[str, bytes] | None = None) -> message.Message:
    notes = NOTES.message_class("rd.v1.Notes")()
    notes.by_account.update(by_account)  # type: ignore[attr-defined]
    notes.blobs.update(blobs or {})  # type: ignore[attr-defined]
    return notes


def test_the_values_of_a_map_of_strings_or_bytes_are_redacted() -> None:
    """A map's values, declared on its entry (`Notes.ByAccountEntry.value`), are each replaced by their
    hash; the keys stay. Before, the setting was accepted and the values were compared, shown and stored
    as they were."""
    notes = _notes({"A1": "Ada", "A2": "Ada", "A3": "Bob", "A4": ""}, {"k": b"\x00secret"})
    Redactor((BY_ACCOUNT, BLOBS), NOTES, b"k").redact(notes)
    values = dict(notes.by_account)  # type: ignore[attr-defined]
    assert sorted(values) == ["A1", "A2", "A3", "A4"]
    assert all(values[k].startswith(PREFIX) for k in ("A1", "A2", "A3"))
    assert values["A1"] == values["A2"] != values["A3"]
    assert values["A4"] == ""
    assert notes.blobs["k"].startswith(PREFIX.encode())  # type: ignore[attr-defined]
    assert "Ada" not in str(notes)
    assert b"secret" not in notes.SerializeToString()
    bank, bk = (
        _notes({"A1": "Ada Lovelace"}).SerializeToString(),
        _notes({"A1": "ADA LOVELACE"}).SerializeToString(),
    )
    comparison = compare(
        Exchange("/rd.v1.S/Get", (b"",), Outcome(0, messages=(bank,)), Outcome(0, messages=(bk,))),
        NOTES,
        redactor=Redactor((BY_ACCOUNT,), NOTES, b"k"),
    )
    assert comparison.verdict is Verdict.MISMATCH
    assert comparison.differences
    assert "Lovelace" not in repr(comparison.differences)
    assert "LOVELACE" not in repr(comparison.differences)


def test_a_maps_key_cannot_be_redacted() -> None:
    """A map's key is refused at start in one line (its values can be redacted)."""
    with pytest.raises(RedactError) as caught:
        Redactor(("rd.v1.Notes.ByAccountEntry.key",), NOTES, b"k")
    assert str(caught.value) == (
        "redact.fields[0]: rd.v1.Notes.ByAccountEntry.key is a map's key: a map's values can be redacted "
        "(rd.v1.Notes.ByAccountEntry.value), not its keys"
    )


OPEN_ACCOUNT = "/bank.v1.Ledger/OpenAccount"
OPEN_OWNER = "bank.v1.OpenAccountRequest.owner_name"


def _open(owner: str) -> tuple[bytes, ...]:
    return (pb.OpenAccountRequest(account_id="A1", owner_name=owner).SerializeToString(),)


def _status_quoting(text: str, rich_message: str | None = None) -> Outcome:
    trailers: tuple[tuple[str, str | bytes], ...] = ()
    if rich_message is not None:
        status = status_pb2.Status(code=6, message=rich_message)
        trailers = (("grpc-status-details-bin", status.SerializeToString()),)
    return Outcome(6, text, trailing_metadata=trailers)


def test_free_text_that_quotes_a_redacted_value_shows_its_hash() -> None:
    """A refusal worded around the owner's name the request carried: the status details, and the message
    of the rich details, show the name's hash where they quote it, so a difference between two wordings is
    still found and shown, without the name; the same wording on both sides still matches."""
    hide = Redactor((OWNER, OPEN_OWNER), REGISTRY, b"k")
    name = hide.hash("Ada Lovelace")
    bank = _status_quoting("owner 'Ada Lovelace' already has an account", "'Ada Lovelace' exists")
    bk = _status_quoting("an account for Ada Lovelace exists", "'Ada Lovelace' is taken")
    comparison = compare(Exchange(OPEN_ACCOUNT, _open("Ada Lovelace"), bank, bk), REGISTRY, redactor=hide)
    assert comparison.verdict is Verdict.MISMATCH
    assert sorted((d.path, d.bank, d.bk) for d in comparison.differences) == [
        ("status.details", f"owner '{name}' already has an account", f"an account for {name} exists"),
        ("status.rich_details.message", f"'{name}' exists", f"'{name}' is taken"),
    ]
    assert "Lovelace" not in repr((comparison.differences, comparison.reason))
    alike = Exchange(
        OPEN_ACCOUNT, _open("Ada Lovelace"), bank, _status_quoting(bank.details, "'Ada Lovelace' exists")
    )
    assert compare(alike, REGISTRY, redactor=hide).verdict is Verdict.MATCH
    # without redaction the texts are shown as they are
    plain = compare(Exchange(OPEN_ACCOUNT, _open("Ada Lovelace"), bank, bk), REGISTRY)
    assert "Ada Lovelace" in repr(plain.differences)


def test_rules_judge_free_text_as_sent_and_differences_show_it_hashed() -> None:
    """A status details pattern, and a rule on the rich details' message, written against the words a
    refusal uses: they judge the text as sent, where a quoted owner's name is a name (two words), not its
    hash; the differences show the hash. Before, they judged the hashed text, and no longer matched."""
    hide = Redactor((OWNER, OPEN_OWNER), REGISTRY, b"k")
    name = hide.hash("Ada Lovelace")
    specs = [
        {"rule": "status", "details": r"(?:owner|holder) '(\w+ \w+)' already has an account"},
        {
            "path": STATUS_MESSAGE,
            "rule": "custom",
            "callable": "tests.comparators._custom_rules:same_quoted_name",
        },
    ]
    rules = build_rules(specs, REGISTRY, parse_duration)
    bank = _status_quoting("owner 'Ada Lovelace' already has an account", "'Ada Lovelace' exists")
    bk = _status_quoting("holder 'Ada Lovelace' already has an account", "'Ada Lovelace' is taken")
    comparison = compare(
        Exchange(OPEN_ACCOUNT, _open("Ada Lovelace"), bank, bk), REGISTRY, rules, redactor=hide
    )
    assert comparison.verdict is Verdict.MATCH, comparison.differences
    assert sorted((d.path, d.bank, d.bk) for d in comparison.differences) == [
        (
            "status.details",
            f"owner '{name}' already has an account",
            f"holder '{name}' already has an account",
        ),
        ("status.rich_details.message", f"'{name}' exists", f"'{name}' is taken"),
    ]


def test_only_whole_words_of_values_long_enough_are_hashed_in_free_text() -> None:
    """A value is hashed where the text holds it whole, not inside a longer word ("Ada" in "Adams"); the
    longest value first ("Ada Lovelace" whole, not "Ada" in it); values under three characters not at all."""
    hide = Redactor((OWNER, OPEN_OWNER), REGISTRY, b"k")
    assert hide.scrub("Ada Adams, Ada Lovelace and Al", {"Ada", "Ada Lovelace", "Al"}) == (
        f"{hide.hash('Ada')} Adams, {hide.hash('Ada Lovelace')} and Al"
    )
    assert hide.scrub("nothing quoted", {"Ada"}) == "nothing quoted"
    assert hide.scrub("", {"Ada"}) == ""


def test_free_text_is_hashed_on_another_service_too() -> None:
    """The custody service's owner, quoted by two refusals worded differently: both show its hash."""
    hide = Redactor(("custody.v1.OpenAccountRequest.owner",), CUSTODY, b"k")
    request = message_class("OpenAccountRequest")(client_ref="r1", owner="Grace Hopper").SerializeToString()
    exchange = Exchange(
        "/custody.v1.Custody/OpenAccount",
        (request,),
        Outcome(9, "Grace Hopper may not open an account"),
        Outcome(9, "refused: Grace Hopper"),
    )
    (difference,) = compare(exchange, CUSTODY, redactor=hide).differences
    name = hide.hash("Grace Hopper")
    assert (difference.path, difference.bank, difference.bk) == (
        "status.details",
        f"{name} may not open an account",
        f"refused: {name}",
    )


def test_an_adapter_error_or_an_unavailable_side_quoting_a_redacted_value_shows_its_hash() -> None:
    """The shim's reasons quote a side's own words (an adapter's error, an UNAVAILABLE's details): the
    values of redacted fields the call carries are hashed there too."""
    hide = Redactor((OPEN_OWNER,), REGISTRY, b"k")
    name = hide.hash("Ada Lovelace")
    error = "adapter a.open for bank.v1.Ledger/OpenAccount raised KeyError: 'Ada Lovelace'"
    adapted = Exchange(
        OPEN_ACCOUNT, _open("Ada Lovelace"), Outcome(6, "exists"), Outcome(13, error, adapter_error=error)
    )
    comparison = compare(adapted, REGISTRY, redactor=hide)
    assert comparison.reason == error.replace("Ada Lovelace", name)
    assert [d.bk for d in comparison.differences] == [comparison.reason]
    unavailable = Exchange(
        OPEN_ACCOUNT, _open("Ada Lovelace"), Outcome(0), Outcome(14, "no route to Ada Lovelace's shard")
    )
    assert (
        compare(unavailable, REGISTRY, redactor=hide).reason
        == f"shadow unavailable: no route to {name}'s shard"
    )


def test_headers_never_compared_do_not_gather_the_calls_redacted_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gathering a call's redacted values decodes its messages again: it is done only when there is free
    text to look at, not for headers that are never compared (a proxy's `date`, `server`)."""
    gathered: list[str] = []
    original = FreeText.of

    def counting(*args: Any, **kwargs: Any) -> FreeText:
        gathered.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(FreeText, "of", counting)
    hide = Redactor((OWNER,), REGISTRY, b"k")
    bank = pb.ListAccountsResponse(
        accounts=[pb.Account(account_id="A1", owner_name="Ada")]
    ).SerializeToString()
    bk = pb.ListAccountsResponse(accounts=[pb.Account(account_id="A2", owner_name="Ada")]).SerializeToString()
    proxied = Outcome(
        0, messages=(bank,), initial_metadata=(("date", "Sun, 06 Dec 2026 18:00:00 GMT"), ("server", "x"))
    )
    compare(Exchange(LIST_ACCOUNTS, (b"",), proxied, Outcome(0, messages=(bk,))), REGISTRY, redactor=hide)
    assert gathered == []
    quoted = Outcome(0, messages=(bank,), initial_metadata=(("x-owner", "Ada"),))
    compare(Exchange(LIST_ACCOUNTS, (b"",), quoted, Outcome(0, messages=(bk,))), REGISTRY, redactor=hide)
    assert gathered == [LIST_ACCOUNTS]
