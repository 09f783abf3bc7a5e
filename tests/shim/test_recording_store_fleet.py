"""Several shim processes recording into one store recording: two replicas given one record.id on one
PostgreSQL store, and the workers of one `shim serve --workers 2` on one SQLite file. Each process is
a part of the recording; the export merges their calls in the order they arrived."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.recording.format import Recording
from shim.store import Store
from tests.helpers import ROOT, postgres_schema_url, shim_command, until
from tests.shim._chain import export
from tests.shim.test_evidence_store import shim_process
from tests.shim.test_recording_capture import LEDGER, bank

__all__ = ["bank"]
CONFIG = """
[methods."bank.v1.Ledger/OpenAccount"]
key = ["account_id"]
[methods."bank.v1.Ledger/Deposit"]
key = ["account_id"]
[methods."bank.v1.Ledger/GetBalance"]
key = ["account_id"]
"""


def _serve_args(bank: RunningLedger, config: Path, store: str, *more: str) -> list[Any]:
    return [
        "--config", config, "--bank", bank.address, "--listen", "127.0.0.1:0", "--dataplane", "python",
        "--descriptor-set", ROOT / "sample_ledger" / "bank.binpb", "--store", store, "--record", "store",
        *more,
    ]  # fmt: skip


async def _one_by_one(addresses: list[str], accounts: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Open, deposit into and read each account, each call on a new connection to the next address in
    turn, each call once the one before it has its answer: the calls, in the order they were made."""
    made: list[tuple[str, tuple[str, ...]]] = []
    turn = 0
    for account in accounts:
        for method, request in (
            ("OpenAccount", pb.OpenAccountRequest(account_id=account, currency="USD")),
            ("Deposit", pb.DepositRequest(account_id=account, amount="2", reference="r")),
            ("GetBalance", pb.GetBalanceRequest(account_id=account)),
        ):
            async with aio.insecure_channel(addresses[turn % len(addresses)]) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await getattr(stub, method)(request)
            made.append((LEDGER + method, (account,)))
            turn += 1
    return made


async def _parts(url: str) -> list[tuple[str, str]]:
    store = Store.open(url)
    await store.start()
    try:
        return [(r.id, p.replica) for r in await store.recordings.all() for p in r.parts]
    finally:
        await store.close()


async def test_two_replicas_record_into_one_postgresql_recording_merged_in_arrival_order(
    bank: RunningLedger, tmp_path: Path
) -> None:
    config = tmp_path / "shim.toml"
    config.write_text(CONFIG + '[record]\nid = "fleet-1"\n')
    with postgres_schema_url() as url:
        async with contextlib.AsyncExitStack() as stack:
            replicas = [
                await stack.enter_async_context(shim_process(*_serve_args(bank, config, url))) for _ in "ab"
            ]
            made = await _one_by_one([r.ready["listen"] for r in replicas], [f"F{n}" for n in range(4)])
            assert [await r.stop() for r in replicas] == [0, 0]
        out = tmp_path / "fleet.jsonl"
        code, said, err = await export(url, out, "--recording", "fleet-1")
        assert (code, err) == (0, ""), err
        assert said == f"record: recording fleet-1: 12 calls written to {out}\n"
        recording = Recording(out)
        assert recording.check().whole
        assert [(c.method, c.keys) for c in recording.calls()] == made
        assert sorted(replica for _, replica in await _parts(url)) == sorted(r.replica for r in replicas)
        assert set(recording.header.replica.split(", ")) == {r.replica for r in replicas}


async def test_the_workers_of_one_shim_serve_record_into_one_recording(
    bank: RunningLedger, tmp_path: Path
) -> None:
    config = tmp_path / "shim.toml"
    config.write_text(CONFIG)
    url = str(tmp_path / "shim.db")
    async with shim_process(*_serve_args(bank, config, url, "--workers", "2")) as shim:
        await until(lambda: any('"workers": 2' in line for line in shim.stderr), "every worker serves")
        made = await _one_by_one([shim.ready["listen"]], [f"W{n}" for n in range(5)])
        assert await shim.stop() == 0
    parts = await _parts(url)
    assert len(parts) == 2  # both workers, each a part of one recording
    assert len({recording for recording, _ in parts}) == 1
    out = tmp_path / "workers.jsonl.gz"
    assert (await export(url, out))[0] == 0
    recording = Recording(out)
    assert recording.check().whole
    assert [(c.method, c.keys) for c in recording.calls()] == made
    listed = await shim_command("record", "list", "--store", url)
    assert [line.split("\t")[3:] for line in listed[1].splitlines()[1:]] == [["15", "0", "stopped"]]
