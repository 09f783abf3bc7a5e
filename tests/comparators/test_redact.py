"""Redaction: sensitive values are replaced by keyed hashes before anything is compared or shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from comparators import DescriptorRegistry, DiffKind, Exchange, Outcome, Verdict, compare
from comparators.redact import PREFIX, RedactError, Redactor
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb

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


def test_with_redaction_undecodable_answers_show_only_their_size() -> None:
    """Bytes that do not decode could hold a sensitive value: their content is not shown."""
    bank = pb.ListAccountsResponse(accounts=[pb.Account(owner_name="Ada Lovelace")]).SerializeToString()
    comparison = compare(_exchange(bank, b"\xffAda Lovelace"), REGISTRY, redactor=redactor())
    (difference,) = comparison.differences
    assert difference.kind is DiffKind.UNDECODABLE
    assert difference.bk == "<13 bytes, not shown: redaction is on>"
    plain = compare(_exchange(bank, b"\xffAda Lovelace"), REGISTRY)
    assert plain.differences[0].bk == b"\xffAda Lovelace".hex()
