"""Reconcile a service with no "list every key" read: the keys come from the store (every routing key
its traffic named) or from a file; keys that are minted ids are read on BK as BK's ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

from grpc import aio

from shim.testing import running_shim
from tests.helpers import shim_command
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.server import Served, serve

HERE = Path(__file__).parent


def _config(tmp_path: Path) -> Path:
    """The custody config with its [reconcile] listing taken out: reads alone, keys from elsewhere."""
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    text = (HERE / "shim.toml").read_text(encoding="utf-8")
    listing = re.compile(r'^(list|items|key|page_size|page_token|next_page_token) = "[^"]*"\n', re.M)
    table = text[text.index("[reconcile]") :]
    section, rest = table.split("\n\n", 1)
    text = text[: text.index("[reconcile]")] + listing.sub("", section) + '\nkeys = "store"\n\n' + rest
    config = tmp_path / "shim.toml"
    config.write_text(text, encoding="utf-8")
    return config


async def _traffic(bank: Served, bk: Served, store: Path, accounts: int) -> list[str]:
    """Accounts opened and funded through the shim: Bank's account ids."""
    from shim.config import load_file

    settings = load_file(HERE / "shim.toml")
    settings.pop("descriptor_sets")
    from tests.services.custody import REGISTRY

    async with running_shim(
        bank.address, bk.address, store={"url": str(store)}, registry=REGISTRY, **settings
    ) as (
        shim,
        _,
    ):
        opened = []
        async with aio.insecure_channel(shim.address) as channel:
            client = Client(channel)
            for n in range(accounts):
                answer = await client.call("OpenAccount", client_ref=f"r{n}", owner=f"Owner {n}")
                opened.append(answer.message.account_id)
                await client.call("Deposit", account_id=opened[-1], amount="10.00")
        await shim.drain()
    return opened


async def _reconcile(
    config: Path, store: Path, bank: Served, bk: Served, *more: str
) -> tuple[int | None, dict]:
    code, out, err = await shim_command(
        "reconcile",
        "--config",
        config,
        "--store",
        store,
        "--bank",
        bank.address,
        "--bk",
        bk.address,
        "--json",
        *more,
    )
    assert code in (0, 1), err
    return code, json.loads(out)


async def test_keys_from_the_store_sweep_a_service_without_a_listing(tmp_path: Path) -> None:
    config, store = _config(tmp_path), tmp_path / "shim.db"
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        opened = await _traffic(bank, bk, store, accounts=10)
        code, result = await _reconcile(config, store, bank, bk)
        assert (code, result["keys"], result["differing"]) == (0, 10, [])  # ten equal accounts agree
        # a deposit only BK got: its account differs, and only it
        async with aio.insecure_channel(bk.address) as channel:
            listed = await Client(channel).call("ListAccounts", page_size=100)
            (r3,) = [a["account_id"] for a in listed.fields()[0]["accounts"] if a["client_ref"] == "r3"]
            await Client(channel).call("Deposit", account_id=r3, amount="1.00")
        code, result = await _reconcile(config, store, bank, bk)
        assert code == 1
        assert [r["key"] for r in result["differing"]] == [opened[3]]  # Bank's id, found through the map
    finally:
        await bank.stop()
        await bk.stop()


async def test_keys_from_a_file_in_either_sides_ids(tmp_path: Path) -> None:
    config, store = _config(tmp_path), tmp_path / "shim.db"
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        opened = await _traffic(bank, bk, store, accounts=3)
        async with aio.insecure_channel(bk.address) as channel:
            listed = await Client(channel).call("ListAccounts", page_size=100)
        bk_first = listed.fields()[0]["accounts"][0]["account_id"]
        keys = tmp_path / "keys.txt"
        keys.write_text(f"# accounts to check\n{opened[1]}\n\n{bk_first}\n", encoding="utf-8")
        code, result = await _reconcile(config, store, bank, bk, "--keys-file", str(keys))
        assert (code, result["keys"], result["differing"]) == (0, 2, [])
        # an account neither side holds (both answer NOT_FOUND) shows nothing: unreadable, never agreeing
        keys.write_text(f"{opened[0]}\nno-such-account\n", encoding="utf-8")
        code, result = await _reconcile(config, store, bank, bk, "--keys-file", str(keys))
        assert (code, result["keys"], result["differing"]) == (1, 2, [])
        assert [r["key"] for r in result["unreadable"]] == ["no-such-account"]
        assert "on Bank: NOT_FOUND" in result["unreadable"][0]["reason"]
        (tmp_path / "empty.txt").write_text("# nothing yet\n", encoding="utf-8")
        empty = await shim_command(
            "reconcile", "--config", config, "--bank", bank.address, "--bk", bk.address, "--keys-file",
            tmp_path / "empty.txt",
        )  # fmt: skip
        assert (empty[0], empty[2].strip()) == (
            2,
            f"shim: error: the keys file {tmp_path / 'empty.txt'} names no key",
        )
        missing = await shim_command(
            "reconcile",
            "--config",
            config,
            "--bank",
            bank.address,
            "--bk",
            bk.address,
            "--keys-file",
            tmp_path / "no",
        )
        assert missing[0] == 2
        assert "cannot read the keys file" in missing[2]
    finally:
        await bank.stop()
        await bk.stop()


async def test_a_store_that_names_no_key_is_an_error_not_an_agreement(tmp_path: Path) -> None:
    from shim.store import Store

    config, store = _config(tmp_path), tmp_path / "empty.db"
    empty = Store.open(str(store))
    await empty.start()
    await empty.close()
    code, _, err = await shim_command(
        "reconcile", "--config", config, "--store", store, "--bank", "127.0.0.1:1", "--bk", "127.0.0.1:2"
    )
    assert code == 2
    assert "names no routing key: give --keys-file FILE" in err


async def test_two_empty_listings_are_an_error_not_an_agreement(tmp_path: Path) -> None:
    """The custody config with its listing: two books with no account are refused (exit 2), never
    "both sides agree" on no key."""
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    config.write_text((HERE / "shim.toml").read_text(encoding="utf-8"), encoding="utf-8")
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        code, out, err = await shim_command(
            "reconcile", "--config", config, "--store", ":memory:", "--bank", bank.address,
            "--bk", bk.address,
        )  # fmt: skip
    finally:
        await bank.stop()
        await bk.stop()
    assert (code, out) == (2, ""), err
    assert "neither Bank nor BK lists any key (custody.v1.Custody/ListAccounts)" in err


async def test_the_mark_of_the_writes_with_no_key_is_named_by_a_sweep_and_never_read_as_a_key(
    tmp_path: Path,
) -> None:
    """A store whose only mark is that of the writes out of step with no key names no routing key: an
    error, never an agreement. With traffic, the sweep reads the keys alone; agreeing on every key, it
    says the mark can be cleared, and how; on the keys of a file, or of the stored traffic (which miss the
    keys of writes the shim never saw), that a sweep of every key is needed first. The JSON carries the
    mark."""
    from shim.store import NO_KEY, OutOfStep, Store

    config, store = _config(tmp_path), tmp_path / "shim.db"
    mark = OutOfStep(
        NO_KEY, 1_800_000_000.0, "/custody.v1.Custody/Freeze", "Bank applied it (OK), BK timed out"
    )

    async def marked(path: Path) -> None:
        held = Store.open(str(path))
        await held.start()
        held.marks.put([mark])
        await held.close()

    await marked(tmp_path / "only.db")
    code, _, err = await shim_command(
        "reconcile", "--config", config, "--store", tmp_path / "only.db", "--bank", "127.0.0.1:1",
        "--bk", "127.0.0.1:2",
    )  # fmt: skip
    assert code == 2, err
    assert "names no routing key: give --keys-file FILE" in err
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        opened = await _traffic(bank, bk, store, accounts=3)
        await marked(store)
        code, result = await _reconcile(config, store, bank, bk)
        assert (code, result["keys"], result["differing"], result["unreadable"]) == (0, 3, [], [])
        assert result["no_key_out_of_step"]["method"] == mark.method
        sides = ("--store", store, "--bank", bank.address, "--bk", bk.address)
        listed = tmp_path / "listed.toml"  # the custody config as it is: its listing reads every account
        listed.write_text((HERE / "shim.toml").read_text(encoding="utf-8"), encoding="utf-8")
        whole = await shim_command("reconcile", "--config", listed, *sides)
        keys = tmp_path / "keys.txt"
        keys.write_text(f"{opened[0]}\n", encoding="utf-8")
        part = await shim_command("reconcile", "--config", config, *sides, "--keys-file", keys)
        seen = await shim_command("reconcile", "--config", config, *sides)  # the config's: the store's
    finally:
        await bank.stop()
        await bk.stop()
    assert whole[0] == 0, whole
    said = " ".join(whole[1].split())
    assert "Both sides agree: 3 keys" in said, said
    assert "Writes with no key are out of step since 2027-01-15T08:00:00Z (custody.v1.Custody/Freeze:" in said
    assert (
        "Both books agree on every key swept: once no such write is under way, clear that mark with" in said
    )
    assert "shim resync --force ''" in said
    for swept in (part, seen):  # the keys of a file, or of the stored traffic: not every key
        assert swept[0] == 0, swept
        said = " ".join(swept[1].split())
        assert (
            "cleared with shim resync --force '' once a sweep of every key finds the books equal" in said
        ), said
