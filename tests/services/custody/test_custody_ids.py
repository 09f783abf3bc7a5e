"""Both test services restarted empty and mint the same ids again: the store's pairs then name nothing.
`shim ids list` shows them and `shim ids forget` clears them, with no need to delete the store."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from grpc import aio

from comparators import Comparison
from shim.config import load_file
from shim.testing import running_shim
from tests.helpers import shim_command
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.server import serve

HERE = Path(__file__).parent


def _settings(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    return load_file(tmp_path / "shim.toml")


async def _session(settings: dict[str, Any], store: Path) -> list[Comparison]:
    """Fresh Bank and BK (empty books, fixed BK), one account opened and funded through the shim."""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with running_shim(bank.address, bk.address, store={"url": str(store)}, **settings) as (
            shim,
            sink,
        ):
            async with aio.insecure_channel(shim.address) as channel:
                client = Client(channel)
                opened = await client.call("OpenAccount", client_ref="r1", owner="Owner r1")
                await client.call("Deposit", account_id=opened.message.account_id, amount="10.00")
            await shim.drain()
            return sink.comparisons
    finally:
        await bank.stop()
        await bk.stop()


def _verdicts(comparisons: list[Comparison]) -> dict[str, str]:
    return {c.exchange.method.rpartition("/")[2]: str(c.verdict) for c in comparisons}


async def test_forgetting_the_pairs_of_services_that_restarted_empty_lets_the_shim_learn_them_again(
    tmp_path: Path,
) -> None:
    settings, store = _settings(tmp_path), tmp_path / "shim.db"
    assert _verdicts(await _session(settings, store)) == {"OpenAccount": "match", "Deposit": "match"}
    listed = await shim_command("ids", "list", "--store", str(store))
    assert listed[0] == 0, listed
    assert listed[1].splitlines()[0] == "account: 1 pair, 0 unpaired; movement: 1 pair, 0 unpaired"
    assert "\tA1\tacc_" in listed[1]
    # both services restart empty: Bank mints A1 again, BK another id; the stored pair names BK's old one
    stale = _verdicts(await _session(settings, store))
    assert stale["Deposit"] != "match"
    # every kind: the account ids and the movement ids both sides minted again
    forgot = await shim_command("ids", "forget", "--store", str(store), "--all")
    assert forgot[0] == 0, forgot
    assert forgot[1].splitlines()[0] == "forgot 2 pairs and 0 unpaired ids of every kind"
    # the stale pair put A1 out of step; its mark goes too (both books are new)
    marks = await shim_command("resync", "--store", str(store), "--list")
    assert marks[1].startswith("A1\tsince ")
    cleared = await shim_command("resync", "--store", str(store), "--force", "A1")
    assert cleared[0] == 0, cleared
    assert _verdicts(await _session(settings, store)) == {"OpenAccount": "match", "Deposit": "match"}


async def test_forgetting_ids_by_value_and_the_usage_errors(tmp_path: Path) -> None:
    settings, store = _settings(tmp_path), tmp_path / "shim.db"
    await _session(settings, store)
    listed = await shim_command("ids", "list", "--store", str(store), "--kind", "account")
    bk_id = next(line.split("\t")[2] for line in listed[1].splitlines() if line.startswith("account\tA1\t"))
    other = await shim_command(
        "ids", "forget", "--store", str(store), "--kind", "account", "--side", "bank", bk_id
    )
    assert other[1].splitlines()[0] == "forgot 0 pairs and 0 unpaired ids of kind account"  # not Bank's id
    by_bk = await shim_command("ids", "forget", "--store", str(store), "--kind", "account", bk_id)
    assert by_bk[1].splitlines()[0] == "forgot 1 pair and 0 unpaired ids of kind account"
    empty = await shim_command("ids", "list", "--store", str(store), "--kind", "account")
    assert empty[1].startswith("no id pair is stored of kind account")
    for args, says in (
        ((), "give the IDs to forget, or --all"),
        (("--all", "A1"), "give the IDs to forget, or --all"),
        (("A1",), "IDs need their --kind"),
    ):
        code, _, err = await shim_command("ids", "forget", "--store", str(store), *args)
        assert (code, err.strip()) == (
            2,
            f"shim: error: shim ids forget: {says}" + (" (not both)" if "or --all" in says else ""),
        )
    missing = await shim_command("ids", "list", "--store", str(tmp_path / "nope.db"))
    assert missing[0] == 2
    assert "no store at" in missing[2]


async def test_pairs_imported_for_accounts_copied_before_the_run_make_their_reads_compare(
    tmp_path: Path,
) -> None:
    """An account opened on each side before the run, as a copy of Bank's data loaded into BK: each side
    minted its own id for it, and no answer pairs them, so a read of it through the shim reached BK by
    Bank's id and failed (NOT_FOUND against OK). `shim ids import` loads the pair from a CSV file; the read
    then compares, a match. A file pairing either id otherwise is refused whole, with exit 1; a kind the
    config does not declare, with exit 2 naming the line."""
    settings, store = _settings(tmp_path), tmp_path / "shim.db"
    config = tmp_path / "shim.toml"
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        ids = {}
        for side, server in (("bank", bank), ("bk", bk)):
            async with aio.insecure_channel(server.address) as channel:
                opened = await Client(channel).call("OpenAccount", client_ref="c1", owner="Copied")
                await Client(channel).call("Deposit", account_id=opened.message.account_id, amount="5.00")
            ids[side] = opened.message.account_id
        assert ids["bank"] != ids["bk"]

        async def read() -> list[Comparison]:
            async with running_shim(bank.address, bk.address, store={"url": str(store)}, **settings) as (
                shim,
                sink,
            ):
                async with aio.insecure_channel(shim.address) as channel:
                    answer = await Client(channel).call("GetBalance", account_id=ids["bank"])
                    assert answer.code == "OK", answer
                await shim.drain()
                return sink.comparisons

        before = await read()
        pairs = tmp_path / "pairs.csv"
        pairs.write_text(f"kind,bank_id,bk_id\naccount,{ids['bank']},{ids['bk']}\n", encoding="utf-8")
        code, out, err = await shim_command("ids", "import", "--config", config, "--store", store, pairs)
        assert code == 0, out + err
        assert out.splitlines()[0].startswith("imported 1 pair (0 stored already) into "), out
        after = await read()
    finally:
        await bank.stop()
        await bk.stop()
    assert [str(c.verdict) for c in before] == ["mismatch"]
    assert [str(c.verdict) for c in after] == ["match"]
    clash = tmp_path / "clash.csv"
    clash.write_text(
        f"kind,bank_id,bk_id\naccount,{ids['bank']},acc_other\naccount,A9,acc_9\n", encoding="utf-8"
    )
    code, out, err = await shim_command("ids", "import", "--config", config, "--store", store, clash)
    assert code == 1, out + err
    assert out.splitlines()[:2] == [
        "shim ids import: 1 stored pair conflict with the file; nothing imported:",
        f"account\t{ids['bank']}\t{ids['bk']}",
    ], out
    listed = await shim_command("ids", "list", "--store", str(store))
    assert "account: 1 pair," in listed[1], listed
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("kind,bank_id,bk_id\naccount,A7,acc_7\nwidget,W1,w_1\n", encoding="utf-8")
    code, out, err = await shim_command("ids", "import", "--config", config, "--store", store, unknown)
    assert code == 2, out + err
    assert f"{unknown} line 3: 'widget' is not an id kind of the config (account, movement, page)" in err, err
    fresh = tmp_path / "before-the-run.db"  # pairs loaded before the first run: the store is made
    code, out, err = await shim_command("ids", "import", "--config", config, "--store", fresh, pairs)
    assert code == 0, out + err
    assert out.startswith("imported 1 pair (0 stored already)"), out


async def test_an_import_file_is_read_as_spreadsheets_write_it_and_its_ids_exactly(tmp_path: Path) -> None:
    """A byte order mark and CRLF line ends (a spreadsheet's "CSV UTF-8") are read; an id with a space
    around it is refused, naming the line (it would name nothing); `--kind` is no flag of the import (the
    file names each pair's kind); with redacted fields and no descriptor files, the kinds stored sealed are
    not known, and the import is refused rather than storing them in the clear."""
    _settings(tmp_path)
    config, store = tmp_path / "shim.toml", tmp_path / "shim.db"
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(b"\xef\xbb\xbfkind,bank_id,bk_id\r\naccount,A1,acc_1\r\n")
    code, out, err = await shim_command("ids", "import", "--config", config, "--store", store, sheet)
    assert code == 0, out + err
    assert out.startswith("imported 1 pair (0 stored already)"), out
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("kind, bank_id, bk_id\naccount, A2, acc_2\n", encoding="utf-8")
    code, out, err = await shim_command("ids", "import", "--config", config, "--store", store, spaced)
    assert code == 2, out + err
    assert f"{spaced} line 2: a value begins or ends with a space" in err, err
    code, out, err = await shim_command("ids", "import", "--config", config, "--kind", "account", sheet)
    assert code == 2, out + err
    assert "unrecognized arguments: --kind" in err, err
    redacted = tmp_path / "redacted.toml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^descriptor_sets = .*\n", "", text)
    redacted.write_text(text + '\n[redact]\nfields = ["custody.v1.Account.account_id"]\n', encoding="utf-8")
    code, out, err = await shim_command("ids", "import", "--config", redacted, "--store", store, sheet)
    assert code == 2, out + err
    assert "the config names no descriptor_sets" in err, err
