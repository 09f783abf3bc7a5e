"""Copies Envoy drops before the comparison plane reads them, on the tally (a second service): the plane
stopped past the time Envoy holds a copy for it, every write through Envoy meanwhile is in the evidence
once, as not mirrored, and a switch made afterwards applies within the default pause (it waits for no
copy Envoy gave up on)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from shim.dataplane.envoy import binary as envoy_binary
from tests.dataplane.test_envoy_faults import _envoy_admin, _envoy_stat, _envoy_stats, _metrics
from tests.helpers import until
from tests.processes import ShimProcess, shim_process
from tests.services.tally.server import APPEND, DESCRIPTOR_SET, LIST, ListReply, ListRequest, Request, serve
from tests.shim.test_modes import AUTH, TOKEN

pytestmark = pytest.mark.skipif(envoy_binary() is None, reason="no Envoy binary on this platform")
CONFIG = """
mode = "shadow"
descriptor_sets = ["tally.binpb"]

[methods."tally.v1.Tally/Append"]
key = ["key"]

[methods."tally.v1.Tally/List"]
read = true

[[rules]]
path = "tally.v1.AppendReply.side"
rule = "ignore"
name = "each side names itself"

[admin]
listen = "127.0.0.1:0"

[envoy]
comparison_nice = 0  # the plane catches up as soon as a test lets it go, however busy the machine
"""


@contextlib.asynccontextmanager
async def _tally_on_envoy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: float = 1.0
) -> AsyncIterator[Served]:
    """The tally's Bank and BK, and `shim serve` on Envoy in front of them (Envoy holds a copy `hold` s)."""
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    (tmp_path / "shim.toml").write_text(CONFIG, encoding="utf-8")
    bank, bk = await serve(side="bank"), await serve(side="bk")
    try:
        async with (
            shim_process(
                *("--config", tmp_path / "shim.toml", "--dataplane", "envoy", "--listen", "127.0.0.1:0"),
                *("--bank", bank.address, "--bk", bk.address, "--store", tmp_path / "shim.db"),
                *("--diff-log", os.devnull, "--metrics", "127.0.0.1:0", "--shadow-timeout", f"{hold:g}s"),
            ) as shim,
            aio.insecure_channel(shim.ready["listen"]) as channel,
        ):
            port = int(shim.ready["metrics"].rpartition(":")[2])
            admin = await asyncio.to_thread(_envoy_admin, shim.ready["pid"])

            def compared() -> float:
                return sum(v for k, v in _metrics(port).items() if k.startswith("shim_comparisons_total{"))

            yield Served(
                shim, channel.unary_unary(APPEND), admin, compared, bank, bk, channel.unary_unary(LIST)
            )
    finally:
        await bank.stop()
        await bk.stop()


@dataclass
class Served:
    shim: ShimProcess
    append: Any
    admin: str  # Envoy's admin address
    compared: Callable[[], float]  # the records so far, from the shim's metrics
    bank: Any
    bk: Any
    list: Any


def _stored(tmp_path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(tmp_path / "shim.db")) as db:
        return dict(db.execute("SELECT verdict, COUNT(*) FROM comparisons GROUP BY verdict").fetchall())


async def test_writes_whose_copies_envoy_dropped_unread_are_recorded_once_and_a_switch_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _tally_on_envoy(tmp_path, monkeypatch) as served:
        shim, append, admin, compared = served.shim, served.append, served.admin, served.compared
        plane = shim.ready["pid"]
        for n in range(3):
            await append(Request(key=f"before{n}", entry="e").SerializeToString(), timeout=10)
        await until(lambda: compared() >= 3, "the first writes compared")
        os.kill(plane, signal.SIGSTOP)
        try:
            for n in range(12):
                await append(Request(key=f"k{n}", entry="e").SerializeToString(), timeout=10)
            await until(lambda: _envoy_stat(admin, "streams_closed") >= 12, "Envoy dropped the copies", 30)
        finally:
            os.kill(plane, signal.SIGCONT)
        await until(lambda: compared() >= 15, "every write in the evidence", 30)
        async with aio.insecure_channel(shim.ready["admin"]) as admin_channel:
            stub = apb_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
            request = apb.SetModeRequest(mode="bk-primary", reason="after the drop", who="ops", force=True)
            switched = await stub.SetMode(request, metadata=AUTH, timeout=30)
    bank, bk = served.bank, served.bk
    assert switched.default_mode == "bk-primary"  # within the default pause: no copy left to wait for
    assert set(bank.received) == {*(f"before{n}" for n in range(3)), *(f"k{n}" for n in range(12))}
    assert set(bk.received) == {f"before{n}" for n in range(3)}  # the dropped copies were never mirrored
    stored = _stored(tmp_path)
    assert stored == {"match": 3, "skipped": 12}, stored  # each write once, the dropped ones unproven


async def test_a_stopped_plane_never_holds_back_large_appends_and_each_is_recorded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends of 64 KB each, 20 at a time, while the comparison plane is stopped: Envoy queues their
    copies far beyond its default buffer for the plane's connection, and holds back none of the calls
    for them (with that default, such calls failed: reset, or at their deadlines); each append is in
    the evidence once after the plane goes on."""
    async with _tally_on_envoy(tmp_path, monkeypatch) as served:
        plane = served.shim.ready["pid"]
        await served.append(Request(key="before", entry="e").SerializeToString(), timeout=10)
        await until(lambda: served.compared() >= 1, "the first write compared")
        os.kill(plane, signal.SIGSTOP)
        try:
            for start in range(0, 200, 20):
                await asyncio.gather(
                    *(
                        served.append(Request(key=f"k{n}", entry="x" * 65536).SerializeToString(), timeout=10)
                        for n in range(start, start + 20)
                    )
                )
            held = await asyncio.to_thread(
                _envoy_stats, served.admin, r"^cluster\.processor\.upstream_flow_control_backed_up_total$"
            )
        finally:
            os.kill(plane, signal.SIGCONT)
        await until(lambda: served.compared() >= 201, "every append in the evidence", 60)
        await served.shim.stop()
    assert held == {"cluster.processor.upstream_flow_control_backed_up_total": 0}, held
    assert len(served.bank.received) == 201
    assert sum(_stored(tmp_path).values()) == 201  # each once: compared, or recorded not mirrored
    with contextlib.closing(sqlite3.connect(tmp_path / "shim.db")) as db:
        reasons = {reason for (reason,) in db.execute("SELECT DISTINCT reason FROM comparisons")}
    assert not [r for r in reasons if "client" in r], reasons  # no client cancelled: copies were lost


async def test_while_the_plane_is_behind_envoy_sheds_the_lists_and_never_an_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plane took up many copies four fifths of Envoy's hold late: Envoy sheds the reads' copies until
    it caught up. Lists made meanwhile are answered, recorded as shed under their method; appends are all
    mirrored, in order."""
    hold = 6.0
    async with _tally_on_envoy(tmp_path, monkeypatch, hold) as served:
        plane = served.shim.ready["pid"]
        port = int(served.shim.ready["metrics"].rpartition(":")[2])

        def gauge(name: str) -> float:
            return sum(v for k, v in _metrics(port).items() if k == name)

        await until(lambda: gauge("shim_shedding_armed") == 1, "the start-up over", 30)
        os.kill(plane, signal.SIGSTOP)
        try:  # many of them: a few late copies are a blip (`read_shedding.MANY`)
            await asyncio.gather(
                *(
                    served.append(Request(key=f"k{n}", entry="e").SerializeToString(), timeout=10)
                    for n in range(40)
                )
            )
            await asyncio.sleep(hold * 0.85)  # the condition is the copies' age itself
        finally:
            os.kill(plane, signal.SIGCONT)
        await until(lambda: gauge("shim_envoy_shedding_reads") == 1, "reads shed at Envoy", 30)
        lists = [served.list(ListRequest(key="k0").SerializeToString(), timeout=10) for _ in range(5)]
        answers = await asyncio.gather(*lists)
        assert all(ListReply.FromString(a).entries for a in answers)  # Bank answered every list
        for n in (1, 2):
            await served.append(Request(key="a", entry=f"{n}").SerializeToString(), timeout=10)
        await until(lambda: gauge("shim_envoy_shedding_reads") == 0, "reads copied again", 30)
        await until(lambda: served.compared() >= 47, "every call in the evidence", 30)
        shed_route = r"^vhost\.all\.route\.shed-[0-9]+\.upstream_rq_total$"  # its calls, while shedding
        shed_by_envoy = sum((await asyncio.to_thread(_envoy_stats, served.admin, shed_route)).values())
    with contextlib.closing(sqlite3.connect(tmp_path / "shim.db")) as db:
        rows = db.execute("SELECT method, verdict, reason FROM comparisons").fetchall()
    assert len(rows) == 47, rows  # each call once
    shed = [m for m, _, r in rows if r.startswith("not mirrored: shed at Envoy")]
    assert shed == [LIST] * len(shed), rows
    assert 1 <= len(shed) == shed_by_envoy, rows
    assert [v for m, v, _ in rows if m == APPEND] == ["match"] * 42, rows  # every append mirrored
    assert served.bk.received["a"] == ["1", "2"]  # in order
    assert {f"k{n}" for n in range(40)} <= set(served.bk.received)
