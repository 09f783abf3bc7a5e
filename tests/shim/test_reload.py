"""SIGHUP: `shim serve` reads its config again, applies what can change at run time, refuses a bad one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from tests.backends import called_method, interop_server, scripted_server
from tests.helpers import NEEDS_ENVOY, PLANES, ROOT, until
from tests.processes import SERVE, TIMEOUT, ShimProcess, shim_process
from tests.shim.test_evidence_store import BANK_BINPB, CALL_TIMEOUT, _shadow_args, _sqlite_sql, _until

# the rules that make GetBalance of the sample ledgers match: decimals as numbers, each side's clock
TOLERANT = """
[[rules]]
regex = 'bank\\.v1\\.Balance\\.(cash|unsettled_cash)'
rule = "decimal"
[[rules]]
path = "bank.v1.Balance.as_of"
rule = "timestamp"
tolerance = "2s"
"""


async def _logged(shim: ShimProcess, event: str) -> dict[str, object]:
    """The first log line of `event` (waited for)."""

    async def look() -> list[dict[str, object]]:
        return [json.loads(line) for line in shim.stderr if f'"event": "{event}' in line]

    found = await _until(look, bool, f"a {event!r} log line")
    return found[0]


async def test_sighup_refuses_a_bad_config_and_applies_a_good_one(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A reloaded config whose rule does not check is refused, naming the rule, and the shim goes on as
    it was; a good one's new rule decides the next comparisons at once, and a changed setting that
    needs a restart is named and keeps its value."""
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    # every read compared, however busy the test machine (no shedding)
    base = f'descriptor_sets = ["{BANK_BINPB}"]\n[shadow]\nshed_lag = 0\n[envoy]\ncomparison_nice = 0\n'
    config.write_text(base, encoding="utf-8")
    store = tmp_path / "shim.db"
    sql = _sqlite_sql(store)

    async def verdicts(count: int) -> list[str]:
        async def look() -> list[str]:
            return [row[0] for row in sql("SELECT verdict FROM comparisons ORDER BY at")]

        return await _until(look, lambda rows: len(rows) >= count, f"{count} comparisons stored")

    async with shim_process(*_shadow_args(bank, bk, store, "--config", config)) as shim:
        async with grpc.aio.insecure_channel(shim.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            balance = pb.GetBalanceRequest(account_id="A1")
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10.5"))
            await stub.GetBalance(balance, timeout=CALL_TIMEOUT)  # "10.50" against "10.5": a mismatch
            config.write_text(
                base + '[[rules]]\npath = "bank.v1.Nope.cash"\nrule = "decimal"\n', encoding="utf-8"
            )
            shim.proc.send_signal(signal.SIGHUP)
            refused = await _logged(shim, "config not reloaded")
            await stub.GetBalance(balance, timeout=CALL_TIMEOUT)  # the config in use: still a mismatch
            await verdicts(3)  # compared before the next reload (rules apply to comparisons made after)
            config.write_text('grace_period = "7s"\n' + base + TOLERANT, encoding="utf-8")
            shim.proc.send_signal(signal.SIGHUP)
            reloaded = await _logged(shim, "config reloaded")
            await stub.GetBalance(balance, timeout=CALL_TIMEOUT)  # the new rule: "10.50" equals "10.5"
            seen = await verdicts(4)
        assert await shim.stop() == 0
    assert "bank.v1.Nope" in str(refused["error"])
    assert reloaded["settings"] == ["grace_period"]
    assert seen[1:] == ["mismatch", "mismatch", "match"]
    # no TLS anywhere: no certificate was reloaded, and none is said to be (before, at every SIGHUP)
    assert not [e for e in shim.events() if e.get("event") == "certificates reloaded"]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_sighup_while_the_shim_starts_is_applied_once_it_serves(
    dataplane: str, workers: str, tmp_path: Path
) -> None:
    """SIGHUP sent while `shim serve` starts (held asking Bank for its descriptors: its comparison plane on
    Envoy, each worker with `--workers 2`): the shim starts all the same, and reloads once it serves, every
    process of it that serves. Before, the SIGHUP killed the shim, or the plane or worker it was passed
    to before it had a handler, and the replica never came up."""
    asked, release = asyncio.Event(), asyncio.Event()

    async def bank(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        if "ServerReflection" in called_method():  # the shim starting, asking for descriptors
            asked.set()
            await release.wait()
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no reflection here")
        return [b"ok:" + r async for r in requests]

    bank_server, bk = await scripted_server(bank), await interop_server()
    args = [
        *("--listen", "127.0.0.1:0", "--bank", bank_server.address, "--bk", bk.address, "--mode", "shadow"),
        *("--store", str(tmp_path / "shim.db"), "--diff-log", "/dev/null"),
        *("--dataplane", dataplane, "--workers", workers),
    ]
    proc = await asyncio.create_subprocess_exec(
        *SERVE, *args, stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE, cwd=ROOT
    )
    assert proc.stderr is not None
    shim = ShimProcess(proc, {}, [])
    reader = asyncio.get_running_loop().create_task(_read(proc.stderr, shim.stderr))
    try:
        await until(asked.is_set, "the shim asking Bank for its descriptors as it starts", TIMEOUT)
        proc.send_signal(signal.SIGHUP)
        release.set()
        shim.ready = await shim.until_event("ready")
        reloaded = await shim.until_event("config reloaded", count=int(workers))
        async with aio.insecure_channel(shim.ready["listen"]) as channel:
            answer = await channel.unary_unary("/test.Any/Call")(b"x", timeout=TIMEOUT)
        assert await shim.stop() == 0
    finally:
        release.set()
        if proc.returncode is None:
            await shim.kill_9()
        await asyncio.wait_for(reader, TIMEOUT)
        await bank_server.stop()
        await bk.stop()
    assert answer == b"ok:x"
    assert reloaded["event"] == "config reloaded"


async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for raw in stream:
        into.append(raw.decode())


@NEEDS_ENVOY
async def test_sighup_after_the_comparison_plane_came_back_names_no_kept_port_as_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Envoy, a comparison plane started again serves its metrics and admin API (given port 0) on the
    ports the first plane picked; a SIGHUP with the file unedited then reloads with nothing to restart (and
    one after the metrics' port was edited names it).
    Before, the plane compared the file's port 0 with the port it kept, and logged `metrics_listen` and
    `admin.listen` as changed settings needing a restart."""
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", "kept-ports")
    bank, bk = await interop_server(), await interop_server()
    config = tmp_path / "shim.toml"
    settings = '[admin]\nlisten = "127.0.0.1:0"\n[shadow]\nshed_lag = 0\n'
    config.write_text('metrics_listen = "127.0.0.1:0"\n' + settings, encoding="utf-8")
    args = ("--config", config, "--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address)
    try:
        async with shim_process(*args, "--store", tmp_path / "shim.db", "--dataplane", "envoy") as shim:

            def reloads() -> list[dict[str, Any]]:
                return [e for e in shim.events() if str(e.get("event", "")).startswith("config reloaded")]

            os.kill(shim.ready["pid"], signal.SIGKILL)  # the comparison plane
            again = await shim.until_event("ready", count=2, within=60)
            shim.proc.send_signal(signal.SIGHUP)
            await until(lambda: reloads(), "the config reloaded")
            config.write_text('metrics_listen = "127.0.0.1:9"\n' + settings, encoding="utf-8")
            shim.proc.send_signal(signal.SIGHUP)
            await until(lambda: len(reloads()) == 2, "the edited config reloaded")
            assert await shim.stop() == 0
    finally:
        await bank.stop()
        await bk.stop()
    # kept; unless another process (the suite's other workers bind port 0 too) took one meanwhile, which
    # the plane says, naming where it was (docs/dataplane.md)
    taken = {
        e.get("was")
        for e in shim.events()
        if "port the plane before served on is taken" in str(e.get("event"))
    }
    for name in ("metrics", "admin"):
        assert again[name] == shim.ready[name] or shim.ready[name] in taken, (name, again, taken)
    unedited, edited = reloads()
    assert (unedited["event"], unedited.get("settings")) == ("config reloaded", None)
    assert edited["settings"] == ["metrics_listen"]
