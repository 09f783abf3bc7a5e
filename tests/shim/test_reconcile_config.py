"""The [reconcile] table: every mistake is a one-line config error naming the setting."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import sample_ledger
from comparators import DescriptorRegistry
from shim.errors import ConfigError
from shim.reconcile import check, parse

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
GOOD: dict[str, Any] = {
    "list": "bank.v1.Ledger/ListAccounts",
    "items": "accounts",
    "key": "account_id",
    "page_token": "page_token",
    "next_page_token": "next_page_token",
    "reads": [{"method": "bank.v1.Ledger/GetBalance", "key": "account_id"}],
}


def test_the_sample_table_checks() -> None:
    """The table of the docs' reconcile page and the sample config parse and check against the descriptors."""
    settings = parse(GOOD)
    check(settings, REGISTRY)
    assert (settings.list, settings.reads[0].method, settings.size) == (
        "bank.v1.Ledger/ListAccounts", "bank.v1.Ledger/GetBalance", 100,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown setting reconcile.colour"),
        ({"list": ""}, "reconcile.list: expected a non-empty string"),
        ({"reads": []}, "reconcile.reads: expected a list"),
        ({"reads": [{"method": "bank.v1.Ledger/GetBalance"}]}, "reconcile.reads[0]: expected"),
        ({"next_page_token": ""}, "page_token and next_page_token go together"),
        ({"size": 0}, "reconcile.size: 0 is not a positive integer"),
        ({"keys": "everything"}, "reconcile.keys: 'everything' is not one of list, store"),
    ],
)
def test_a_malformed_table_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse({**GOOD, **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"list": "bank.v1.Ledger/Nope"}, "reconcile.list: bank.v1.Ledger/Nope is not a method"),
        ({"list": "bank.v1.Ledger/StreamLedgerEntries"}, "is not a unary method"),
        (
            {"items": "next_page_token"},
            "reconcile.items: bank.v1.ListAccountsResponse has no repeated message",
        ),
        ({"key": "number"}, "reconcile.key: bank.v1.Account has no field 'number'"),
        ({"page_token": "cursor"}, "bank.v1.ListAccountsRequest has no field 'cursor'"),
        (
            {"reads": [{"method": "bank.v1.Ledger/GetBalance", "key": "client"}]},
            "reconcile.reads[0].key: 'client' names no single field",
        ),
    ],
)
def test_a_table_the_descriptors_cannot_honour_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check(parse({**GOOD, **change}), REGISTRY)
    assert message in str(refused.value)


def test_a_listing_that_pages_without_its_page_token_is_refused() -> None:
    """The listing's answer has a field that looks like the next page's token: without page_token and
    next_page_token the sweep would stop after the first page, so the table is refused."""
    unpaged = {key: value for key, value in GOOD.items() if key not in ("page_token", "next_page_token")}
    with pytest.raises(ConfigError) as refused:
        check(parse({**unpaged, "page_size": "page_size"}), REGISTRY)
    assert str(refused.value) == (
        "reconcile.page_token: bank.v1.ListAccountsResponse has 'next_page_token', which looks like the "
        "next page's token: name page_token and next_page_token, or only the first page is read"
    )


def test_without_a_listing_read_the_keys_come_from_the_store() -> None:
    reads = [{"method": "bank.v1.Ledger/GetBalance", "key": "account_id"}]
    settings = parse({"reads": reads})
    assert (settings.keys, settings.list) == ("store", "")
    check(settings, REGISTRY)  # the reads alone are checked
    assert parse({**GOOD, "keys": "store"}).keys == "store"  # a listing kept, but not used by default
    with pytest.raises(
        ConfigError, match=re.escape('reconcile.list: expected a non-empty string (or keys = "store"')
    ):
        parse({"reads": reads, "keys": "list"})
    with pytest.raises(
        ConfigError, match=re.escape("reconcile.reads[0].method: bank.v1.Ledger/Nope is not a method")
    ):
        check(parse({"reads": [{"method": "bank.v1.Ledger/Nope", "key": "account_id"}]}), REGISTRY)
