"""One account is one key however a call names it, with the account ids redacted.

Custody's account ids are sensitive: redacted wherever they appear. A call names an account by its id (a
deposit's `key` path), through a movement it booked (a reversal, whose key is the movement's owners) or by
the client's reference (a key alias). All three are one key, hashed alike, so the calls on the account
are ordered against each other and a mark left by one taints the others. Before, keys read from a
redacted field were hashed and those from owners and aliases were not: one account was two keys, a
reversal and a read overtook each other on BK, a mark on one form left the other untainted, and the raw
account id reached the marks in the store (docs/ordering.md, docs/store.md#redaction)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from structlog.testing import capture_logs

from comparators import Verdict
from comparators.redact import PREFIX
from shim.config import Upstream, build, load_file, merged
from shim.errors import ConfigError
from shim.parts import Parts
from shim.testing import running_shim
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.messages import REGISTRY
from tests.services.custody.server import serve
from tests.shim import test_store as engines
from tests.shim.test_store import Target

HERE = Path(__file__).parent
ACCOUNT_FIELDS = [
    "custody.v1.Account.account_id",
    "custody.v1.GetBalanceRequest.account_id",
    "custody.v1.DepositRequest.account_id",
    "custody.v1.TransferRequest.from_account",
    "custody.v1.TransferRequest.to_account",
    "custody.v1.FreezeRequest.account_id",
    "custody.v1.ListMovementsRequest.account_id",
    "custody.v1.Movement.from_account",
    "custody.v1.Movement.to_account",
    "custody.v1.Balance.account_id",
]


def _settings(tmp_path: Path, *, owned: bool = False) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    settings = load_file(tmp_path / "shim.toml")
    settings["redact"] = {"fields": ACCOUNT_FIELDS}
    if owned:  # an account id names the account, whose key it is
        settings["ids"] = tuple(
            replace(k, owner_key=("custody.v1.Account.account_id",)) if k.name == "account" else k
            for k in settings["ids"]
        )
    return settings


def _request(method: str, **fields: Any) -> Any:
    info = REGISTRY.method(f"/custody.v1.Custody/{method}")
    assert info is not None
    return REGISTRY.message_class(info.input_type)(**fields)


def _no_raw(account: str, marks: dict[str, Any]) -> None:
    """No mark holds the account's raw id: neither as its key nor in its reason."""
    assert marks
    for key, mark in marks.items():
        assert key.startswith(PREFIX), key
        assert account not in key
        assert account not in mark.reason


async def test_an_account_named_by_id_movement_or_reference_is_one_hashed_key(tmp_path: Path) -> None:
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(tmp_path)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            account = (await client.call("OpenAccount", client_ref="r1", owner="Owner r1")).message.account_id
            deposit = await client.call("Deposit", account_id=account, amount="10.00")
            assert deposit.ok
            await shim.drain()
            place = shim.dispatcher.shared.translation.place
            keys = {
                place(f"/custody.v1.Custody/{method}", _request(method, **fields))
                for method, fields in (
                    ("Deposit", {"account_id": account}),
                    ("Reverse", {"movement_id": deposit.message.movement_id}),
                    ("GetAccountByRef", {"client_ref": "r1"}),
                )
            }
            assert len(keys) == 1, keys
            ((key,), unknown) = keys.pop()
            assert (key.startswith(PREFIX), account in key, unknown) == (True, False, False)

            # a reversal BK fails marks the account; a read of its balance by its id is tainted by it
            bk.fail("Reverse", grpc.StatusCode.INTERNAL)
            assert (await client.call("Reverse", movement_id=deposit.message.movement_id)).ok
            assert (await client.call("GetBalance", account_id=account)).ok
            (balance,) = await sink.wait_for(1, where=lambda c: c.exchange.method.endswith("/GetBalance"))
            assert shim.steps is not None
            marks = shim.steps.keys
    finally:
        await bank.stop()
        await bk.stop()
    assert balance.verdict is Verdict.TAINTED, (balance.verdict, balance.reason)
    assert list(marks) == [key]
    _no_raw(account, marks)


async def test_a_minted_account_missed_by_bk_is_marked_by_its_hash(tmp_path: Path) -> None:
    """A write with no key that mints its account (`owner_key` on the account id) marks the key it minted:
    hashed as every key on the account is, never the raw id."""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(tmp_path, owned=True)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            bk.fail("OpenAccount", grpc.StatusCode.INTERNAL)
            missed = await client.call("OpenAccount", client_ref="r1", owner="Owner r1")
            assert missed.ok, "Bank's answer"
            await sink.wait_for(1, where=lambda c: c.exchange.method.endswith("/OpenAccount"))
            account = missed.message.account_id
            keys = shim.dispatcher.shared.translation.keys_for(
                "/custody.v1.Custody/Deposit", _request("Deposit", account_id=account)
            )
            assert len(keys) == 1, keys  # its id, and the id's owner: one key
            (key,) = keys
            assert shim.steps is not None
            marks = shim.steps.keys
    finally:
        await bank.stop()
        await bk.stop()
    assert list(marks) == [key]
    _no_raw(account, marks)


durable = engines.durable  # SQLite in a file and PostgreSQL


async def test_a_key_alias_on_a_redacted_key_is_stored_sealed_and_known_after_a_restart(
    tmp_path: Path, durable: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's reference names its account, whose id is redacted: the alias learned is stored
    sealed, as the id pairs of redacted fields are, never as it was, and a shim started later on the
    same store opens it, so a read by the reference is on the account's key at once. An alias an older
    shim stored as it was is sealed when the shim starts. Before, the account id reached the store as
    it was in every alias learned (docs/store.md#redaction)."""
    monkeypatch.setenv("SHIM_REDACT_KEY", "custody-redaction-key")
    settings = {**_settings(tmp_path), "store": {"url": durable.url}}
    by_ref = "/custody.v1.Custody/GetAccountByRef"
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with (
            running_shim(bank.address, bk.address, **settings) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            first = (await client.call("OpenAccount", client_ref="r1", owner="Owner r1")).message.account_id
            older = (await client.call("OpenAccount", client_ref="r0", owner="Owner r0")).message.account_id
            await shim.drain()
            place = shim.dispatcher.shared.translation.place
            ((key,), unknown) = place(by_ref, _request("GetAccountByRef", client_ref="r1"))
            assert unknown is False
            assert shim.store is not None
            await shim.store.flush()
        stored = durable.sql("SELECT alias, key FROM key_aliases WHERE kind = 'client_ref'")
        assert len(stored) == 2, stored
        assert all(value.startswith("sealed:") for row in stored for value in row), stored
        assert not {first, older, "r1", "r0"} & {value for row in stored for value in row}
        # r0 as a shim that did not seal its aliases stored it
        ((sealed_r0,),) = durable.sql("SELECT alias FROM key_aliases ORDER BY learned_at DESC LIMIT 1")
        durable.sql(f"DELETE FROM key_aliases WHERE alias = '{sealed_r0}'")
        durable.sql(
            "INSERT INTO key_aliases (kind, alias, key, learned_at)"
            f" VALUES ('client_ref', 'r0', '{older}', 1.0)"
        )
        async with running_shim(bank.address, bk.address, **settings) as (shim, _):
            place = shim.dispatcher.shared.translation.place
            assert place(by_ref, _request("GetAccountByRef", client_ref="r1")) == ((key,), False)
            deposit = place("/custody.v1.Custody/Deposit", _request("Deposit", account_id=older))
            assert place(by_ref, _request("GetAccountByRef", client_ref="r0")) == deposit
            assert deposit[0][0].startswith(PREFIX)
        # under another key, the aliases do not open: left out, said so, and a read by them is unkeyed
        monkeypatch.setenv("SHIM_REDACT_KEY", "another-key")
        with capture_logs() as logs:
            async with running_shim(bank.address, bk.address, **settings) as (shim, _):
                place = shim.dispatcher.shared.translation.place
                assert place(by_ref, _request("GetAccountByRef", client_ref="r1")) == ((), True)
        (said,) = [e for e in logs if e["event"].startswith("key aliases sealed under another redaction key")]
        assert said["aliases"] == 2
    finally:
        await bank.stop()
        await bk.stop()
    stored = durable.sql("SELECT alias, key FROM key_aliases WHERE kind = 'client_ref'")
    assert len(stored) == 2, stored
    assert all(value.startswith("sealed:") for row in stored for value in row), stored
    assert not {first, older, "r1", "r0"} & {value for row in stored for value in row}


def test_a_key_alias_on_a_redacted_key_needs_the_key_from_the_environment_for_a_lasting_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a random key the aliases stored would not open after a restart, nor in another replica:
    refused at start, in one line naming the alias and the settings. A store in memory is taken."""
    monkeypatch.delenv("SHIM_REDACT_KEY", raising=False)

    def parts(url: str) -> Parts:
        settings = {**_settings(tmp_path), "ids": (), "store": {"url": url}}
        given = {"bank": Upstream("bank", "127.0.0.1:1"), "bk": Upstream("bk", "127.0.0.1:2")}
        return Parts(build(merged(settings, given)), REGISTRY)

    with pytest.raises(ConfigError) as refused:
        parts(str(tmp_path / "shim.db"))
    assert str(refused.value) == (
        "key_aliases.client_ref: custody.v1.Account.account_id is redacted (redact.fields), so its aliases"
        " are stored sealed under the redaction key, and $SHIM_REDACT_KEY (redact.key_env) is not set: under"
        " a random key they would not open after a restart, nor in another worker or replica"
    )
    assert parts(":memory:").alias_sealer is not None
