"""Recording into the evidence store ([record] into = "store"), on SQLite and PostgreSQL: a shim in `bank`
mode with no BK in front of the sample Bank records the calls; `shim record export` writes a file that
holds what a file recording of the same calls holds (redacted and sampled alike) and that replay
accepts; bounds end the recording whole; a recording not ended is refused (or exported cut short
under --truncated); retention removes whole recordings; bad input gets one clear error."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.errors import StartupError
from shim.recording.format import Recording
from shim.recording.recorder import key_sampled
from shim.replay.source import Filters, open_source
from shim.store import Store
from shim.testing import running_shim
from tests.helpers import postgres_schema_url, shim_command, until
from tests.shim._chain import chained, export, same_as_file
from tests.shim.test_evidence_store import _until
from tests.shim.test_recording_capture import KEYED, LEDGER, REGISTRY, _every_kind, bank

__all__ = ["bank"]  # the fixture, shared with the file recording's tests
REDACT = {"fields": ["bank.v1.OpenAccountRequest.owner_name", "bank.v1.Account.owner_name"]}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store for the recordings: a SQLite file, or a PostgreSQL schema of its own (skipped without one)."""
    if request.param == "sqlite":
        yield str(tmp_path / "shim.db")
        return
    with postgres_schema_url() as url:
        yield url


async def _calls(store: Store) -> int:
    return sum(r.calls for r in await store.recordings.all())


async def test_an_exported_store_recording_holds_what_a_file_recording_holds(
    bank: RunningLedger, tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIM_REDACT_KEY", "store-recording-key")
    file, out = tmp_path / "file.jsonl", tmp_path / "exported.jsonl.gz"
    async with (
        chained(bank.address, REGISTRY, file, store_url, methods=KEYED, redact=REDACT) as (front, _),
        aio.insecure_channel(front.address) as channel,
    ):
        await _every_kind(pb_grpc.LedgerStub(channel))  # type: ignore[no-untyped-call]
    code, said, err = await export(store_url, out)
    assert (code, err) == (0, ""), err
    assert said.startswith("record: recording ")
    assert said.endswith(f": 7 calls written to {out}\n")
    calls = same_as_file(out, file)
    assert [c.method.removeprefix(LEDGER) for c in calls][:3] == ["OpenAccount", "Deposit", "GetBalance"]
    assert pb.OpenAccountRequest.FromString(calls[0].requests[0]).owner_name.startswith("redacted:")
    source = open_source(out, REGISTRY, Filters())  # replay takes it as it takes any recording
    assert (source.ending.whole, source.ending.calls, source.ending.reason) == (True, 7, "stopped")
    listed = await shim_command("record", "list", "--store", store_url)
    assert listed[0] == 0
    header, row = listed[1].splitlines()
    assert header == "id\tstarted\tended\tcalls\tlost\treason"
    assert row.split("\t")[3:] == ["7", "0", "stopped"]
    assert source.header.extra["recording"] == row.split("\t")[0]


async def test_sampling_and_max_bytes_apply_to_the_store_as_to_a_file(
    bank: RunningLedger, tmp_path: Path
) -> None:
    accounts = [f"S{n}" for n in range(16)]
    sampled = {a for a in accounts if key_sampled(a, 0.5)}
    assert 0 < len(sampled) < len(accounts)
    store, file, out = str(tmp_path / "s.db"), tmp_path / "f.jsonl", tmp_path / "out.jsonl"
    async with (
        chained(bank.address, REGISTRY, file, store, methods=KEYED, record={"sample": 0.5}) as (
            front,
            _,
        ),
        aio.insecure_channel(front.address) as channel,
    ):
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for account in accounts:
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, currency="USD"))
            await stub.Deposit(pb.DepositRequest(account_id=account, amount="3", reference="r"))
    assert (await export(store, out))[0] == 0
    calls = same_as_file(out, file)
    assert {k for c in calls for k in c.keys} == sampled
    # max_bytes: the recording ends whole within it, the shim serving on
    bounded, small = str(tmp_path / "b.db"), tmp_path / "small.jsonl"
    async with (
        running_shim(
            bank.address,
            registry=REGISTRY,
            record={"into": "store", "max_bytes": 40_000},
            store={"url": bounded},
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for n in range(30):
            await stub.Deposit(pb.DepositRequest(account_id="S0", amount="1", reference="x" * 2000 + str(n)))
    assert (await export(bounded, small))[0] == 0
    ending = Recording(small).check()
    assert (ending.whole, ending.reason) == (True, "record.max_bytes reached")
    assert 0 < ending.calls < 30
    assert small.stat().st_size <= 40_000


async def test_a_recording_not_ended_is_refused_or_exported_cut_short(
    bank: RunningLedger, tmp_path: Path
) -> None:
    url, out = str(tmp_path / "s.db"), tmp_path / "out.jsonl"
    store = Store.open(url)
    await store.start()
    try:
        async with running_shim(
            bank.address, registry=REGISTRY, record={"into": "store", "id": "running"}, store={"url": url}
        ) as (shim, _):
            async with aio.insecure_channel(shim.address) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", currency="USD"))
                await stub.GetBalance(pb.GetBalanceRequest(account_id="R1"))
            # the calls are committed, the recording goes on
            await _until(lambda: _calls(store), lambda n: n >= 2, "both calls are in the store")
            code, _, err = await export(url, out)
            assert code == 2
            assert err == (
                "shim: error: recording running has not ended: 1 of its 1 parts are still being written (or"
                " their shim stopped before it could end them); export its calls so far with --truncated\n"
            )
            assert not out.exists()
            assert not out.with_name(out.name + ".partial").exists()
            code, said, err = await export(url, out, "--truncated")
            assert (code, err) == (0, "")
            partial = out.with_name(out.name + ".partial")
            assert f"its 2 calls so far written to {partial}, with no end line" in said
            assert not out.exists()
            cut = Recording(partial, truncated=True)
            assert (cut.check().whole, len(list(cut.calls()))) == (False, 2)
    finally:
        await store.close()
    assert (await export(url, tmp_path / "whole.jsonl"))[0] == 0  # ended once the shim stopped
    assert Recording(tmp_path / "whole.jsonl").check().calls == 2


async def test_bad_input_gets_one_clear_error(bank: RunningLedger, tmp_path: Path) -> None:
    url = str(tmp_path / "s.db")
    code, _, err = await export(url, tmp_path / "x.jsonl")
    assert (code, err) == (
        2,
        f"shim: error: no store at {url}: nothing was recorded there (give --store URL or --config FILE)\n",
    )
    empty = Store.open(url)
    await empty.start()
    await empty.close()
    assert await export(url, tmp_path / "x.jsonl") == (
        2,
        "",
        f"shim: error: store {url} holds no recording\n",
    )
    async with (
        running_shim(
            bank.address, registry=REGISTRY, record={"into": "store", "id": "r1"}, store={"url": url}
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.ListAccounts(pb.ListAccountsRequest())
    code, _, err = await export(url, tmp_path / "x.jsonl", "--recording", "r2")
    assert (code, err) == (
        2,
        f"shim: error: store {url} holds no recording 'r2' (`shim record list` shows those it holds)\n",
    )
    taken = tmp_path / "taken.jsonl"
    taken.write_text("mine\n")
    code, _, err = await export(url, taken)
    assert (code, err) == (2, f"shim: error: {taken}: the file exists: a recording is never written over\n")
    assert taken.read_text() == "mine\n"
    (tmp_path / "plain").write_text("")
    code, _, err = await export(url, tmp_path / "plain" / "x.jsonl")
    assert code == 2
    assert err.startswith(f"shim: error: {tmp_path / 'plain' / 'x.jsonl'}: cannot write")
    # an ended recording is never added to
    with pytest.raises(
        StartupError, match=r"^record\.id: recording r1 in store .* has ended: a recording is"
    ):
        async with running_shim(
            bank.address, registry=REGISTRY, record={"into": "store", "id": "r1"}, store={"url": url}
        ):
            pass
    assert (await export(url, tmp_path / "r1.jsonl", "--recording", "r1"))[0] == 0
    assert Recording(tmp_path / "r1.jsonl").check().calls == 1


async def test_retention_removes_whole_recordings_when_a_recording_begins(
    bank: RunningLedger, tmp_path: Path
) -> None:
    url = str(tmp_path / "s.db")
    store = Store.open(url)
    await store.start()
    day = 24 * 3600.0
    old, recent = time.time() - 3 * day, time.time() - 3600.0
    for name, at in (("old", old), ("recent", recent)):
        await store.recordings.begin(name, "{}", f"part-{name}", "h:1", at, lambda _: True)
        await store.recordings.add(name, f"part-{name}", [(0, at + 1, "{}"), (1, at + 2, "{}")])
        await store.recordings.end(f"part-{name}", at + 3, "stopped", 0)
    await store.close()
    settings: dict[str, Any] = {"url": url, "retain": 2 * day}
    async with running_shim(bank.address, registry=REGISTRY, record={"into": "store"}, store=settings):
        pass
    store = Store.open(url)
    await store.start()
    try:
        left = await store.recordings.all()
        assert [r.id for r in left][:1] == ["recent"]
        assert len(left) == 2  # "recent", and the one just made
        assert await store.select("SELECT COUNT(*) FROM recorded_calls WHERE recording = 'old'") == [(0,)]
        assert await store.select("SELECT COUNT(*) FROM recording_parts WHERE recording = 'old'") == [(0,)]
    finally:
        await store.close()


async def test_calls_the_store_does_not_take_are_counted_lost_and_the_clients_served(
    bank: RunningLedger, tmp_path: Path
) -> None:
    url = str(tmp_path / "s.db")
    async with (
        running_shim(
            bank.address, registry=REGISTRY, record={"into": "store", "id": "lossy"}, store={"url": url}
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        with sqlite3.connect(url) as db:  # the calls' table gone: every batch fails
            db.execute("DROP TABLE recorded_calls")
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for n in range(3):
            opened = await stub.OpenAccount(pb.OpenAccountRequest(account_id=f"L{n}", currency="USD"))
            assert opened.account_id == f"L{n}"
        await until(lambda: shim.counters.get("recording_lost") == 3, "3 calls counted as lost")
    store = Store.open(url)
    await store.start()
    try:
        (recording,) = await store.recordings.all()
    finally:
        await store.close()
    assert (recording.id, recording.calls, recording.lost, recording.reason) == ("lossy", 0, 3, "stopped")


def test_serve_record_store_flag_records_into_the_store_with_any_number_of_workers(tmp_path: Path) -> None:
    from shim import cli
    from shim.cli import serve as serve_command

    config = tmp_path / "shim.toml"
    config.write_text('[record]\npath = "calls.jsonl"\n')
    args = [
        "serve",
        "--config",
        config,
        "--bank",
        "127.0.0.1:1",
        "--store",
        tmp_path / "s.db",
        "--workers",
        "2",
    ]
    settings = serve_command.settings_of(cli.parser().parse_args([*map(str, args), "--record", "store"]))
    assert (settings.record.into, settings.record.path, settings.serving.workers) == ("store", "", 2)
    back = serve_command.settings_of(cli.parser().parse_args([*map(str, args[:-2]), "--record", "x.jsonl"]))
    assert (back.record.into, back.record.path) == ("file", "x.jsonl")
