"""The custody ledger behind `shim serve` on Envoy: SIGTERM while Envoy still holds the copies of calls it
answered leaves none of them behind: the comparison plane takes them all before Envoy stops (the second
service of
`tests/dataplane/test_supervisor.py::test_sigterm_right_after_the_calls_leaves_none_of_their_copies_behind`;
here the plane is stopped while the calls are made, so that Envoy holds every copy)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from grpc import aio

from shim.dataplane import envoy
from tests.processes import shim_process
from tests.services.custody import DESCRIPTOR_SET, Client, serve

HERE = Path(__file__).resolve().parent
STEP = 30.0

pytestmark = pytest.mark.skipif(envoy.binary() is None, reason="no Envoy on this platform")


async def test_sigterm_right_after_the_calls_leaves_none_of_their_copies_behind(tmp_path: Path) -> None:
    descriptors = tmp_path / "custody.binpb"
    descriptors.write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    text = (HERE / "shim.toml").read_text().replace('"custody.binpb"', json.dumps(str(descriptors)))
    # not strict: the writes' primary path is then Envoy's alone, and only their copies reach the plane
    config.write_text(text.replace("strict = true", "strict = false"))
    # the plane at the suite's priority: it takes every copy within the grace period on a busy machine
    config.write_text(config.read_text() + "\n[envoy]\ncomparison_nice = 0\n")
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    db, calls = tmp_path / "shim.db", 100
    try:
        async with shim_process(
            *("--listen", "127.0.0.1:0", "--config", config, "--bank", bank.address, "--bk", bk.address),
            *("--dataplane", "envoy", "--store", db),
            cwd=tmp_path,
        ) as shim:
            event = shim.ready
            async with aio.insecure_channel(event["listen"]) as channel:
                client = Client(channel)
                opened = await client.call("OpenAccount", client_ref="C1", owner="Ada")
                assert opened.ok, opened
                account = opened.message.account_id
                # the comparison plane stopped: Envoy answers the calls and holds their copies
                os.kill(event["pid"], signal.SIGSTOP)
                try:
                    answers = await asyncio.gather(
                        *(client.call("Deposit", account_id=account, amount="1.00") for _ in range(calls))
                    )
                    assert all(answer.ok for answer in answers), [a for a in answers if not a.ok][:2]
                    # passed on to the plane, which has it when it runs again
                    shim.proc.send_signal(signal.SIGTERM)
                finally:
                    os.kill(event["pid"], signal.SIGCONT)
            assert await asyncio.wait_for(shim.proc.wait(), STEP) == 0
    finally:
        await bank.stop()
        await bk.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0] == calls + 1
