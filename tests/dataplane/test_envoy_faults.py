"""A processor that is gone, hung or killed costs the clients nothing; what it missed is counted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.dataplane import EnvoyPlane
from shim.dataplane import envoy as envoy_process
from shim.dataplane.metrics import WANTED, wanted
from shim.dataplane.unseen import UNSEEN
from shim.recording.format import Recording
from shim.testing import running_shim
from tests.helpers import ROOT, envoy_admin_get, until
from tests.processes import ShimProcess, shim_process

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
SAMPLE = ROOT / "sample_ledger"


async def _deposits(address: str, count: int, account: str = "A1", reference: str = "") -> list[str]:
    """`count` deposits through `address`, 20 at a time; the errors (none expected)."""
    errors: list[str] = []
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        try:
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, owner_name="Ada"), timeout=10)
        except aio.AioRpcError as exc:
            if exc.code().name != "ALREADY_EXISTS":
                errors.append(f"{exc.code().name}: {exc.details()}")

        async def one(n: int) -> None:
            try:
                request = pb.DepositRequest(account_id=account, amount=f"{n + 1}.00", reference=reference)
                await stub.Deposit(request, timeout=10)
            except aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")

        for start in range(0, count, 20):
            await asyncio.gather(*(one(n) for n in range(start, min(start + 20, count))))
    return errors


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_envoys_stats_are_on_the_metrics_endpoint(ledgers: tuple[RunningLedger, RunningLedger]) -> None:
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, dataplane="envoy", metrics_listen="127.0.0.1:0") as (
        shim,
        sink,
    ):
        assert await _deposits(shim.address, 5) == []
        await sink.wait_for(6)
        assert shim.exporter is not None
        port = shim.exporter.port

        def shown() -> bool:
            figures = _metrics(port)
            return (
                figures.get('shim_envoy_copies_total{stat="streams_started"}', 0) >= 5
                and figures.get('shim_envoy_upstream_total{cluster="bank",stat="rq_total"}', 0) >= 5
                and figures.get('shim_envoy_downstream_total{stat="rq_total"}', 0) >= 5
            )

        await until(shown, "Envoy's stats on the metrics endpoint")
        figures = _metrics(port)
    assert figures["shim_envoy_up"] == 1
    assert figures['shim_envoy_memory_bytes{kind="allocated"}'] > 0
    assert 'shim_envoy_upstream_active{cluster="bank"}' in figures


def test_envoy_picks_the_same_stats_the_metrics_show() -> None:
    """Envoy is asked only for the stats the metrics show (`WANTED`): the pattern and `wanted` agree."""
    pattern = re.compile(WANTED)
    names = [
        f"{prefix}{middle}{stat}{tail}"
        for prefix in ("cluster.", "http.shim.", "server.", "http.shim.ext_proc.mirror.", "listener.")
        for middle in ("bank.", "bk.", "python.", "processor.", "other.", "")
        for stat in ("upstream_rq_total", "upstream_rq_5xx", "downstream_rq_total", "memory_allocated", "x")
        for tail in ("", "_more", ".sub")
    ]
    assert {n for n in names if pattern.search(n)} == {n for n in names if wanted(n)}
    assert sum(map(wanted, names)) > 20


async def test_a_processor_that_is_gone_costs_the_clients_nothing(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """With the processor's server stopped, every call still succeeds through Envoy; the copies Envoy
    could not hand over are counted, and each such call is recorded as one the shim did not see."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, dataplane="envoy", metrics_listen="127.0.0.1:0") as (
        shim,
        sink,
    ):
        assert await _deposits(shim.address, 10) == []
        await sink.wait_for(11)
        plane = shim.front
        assert isinstance(plane, EnvoyPlane)
        assert plane._server is not None
        await plane._server.stop(None)  # the comparison plane is gone
        assert await _deposits(shim.address, 100) == []

        calls = 1 + 100  # _deposits opens the account (it exists already), then deposits
        # a copy whose call was over before Envoy found the processor gone is counted by no ext_proc stat
        # (neither failed nor closed): the shim counts it from the copies' streams, 5 s late
        unseen = await sink.wait_for(calls, within=60.0, where=lambda c: c.method == UNSEEN)
    # the calls the shim never saw are in the evidence as calls it did not see: nothing passes for proof
    assert len(unseen) == calls
    assert {c.verdict for c in unseen} == {Verdict.SKIPPED}
    assert len(sink.comparisons) == 11 + calls


@pytest.fixture
async def served(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: os.PathLike[str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, int]]:
    """`shim serve` on Envoy: its process (the supervisor), the clients' address, and the comparison
    plane's process."""
    bank, bk = ledgers
    async with shim_process(
        *("--listen", "127.0.0.1:0", "--dataplane", "envoy"),
        *("--config", SAMPLE / "shim.toml", "--bank", bank.address, "--bk", bk.address),
        *("--store", f"{tmp_path}/shim.db", "--diff-log", os.devnull),
    ) as shim:
        yield shim.proc, shim.ready["listen"], shim.ready["pid"]


async def test_a_hung_shim_process_costs_the_clients_nothing(
    served: tuple[asyncio.subprocess.Process, str, int],
) -> None:
    """The comparison plane stopped (SIGSTOP: its processor hangs): calls through Envoy all succeed."""
    _, address, plane = served
    assert await _deposits(address, 20) == []
    os.kill(plane, signal.SIGSTOP)
    try:
        assert await _deposits(address, 200) == []
    finally:
        os.kill(plane, signal.SIGCONT)
    assert await _deposits(address, 20) == []


async def test_envoy_does_not_outlive_a_killed_shim(
    served: tuple[asyncio.subprocess.Process, str, int],
) -> None:
    """`shim serve` killed with SIGKILL takes its Envoy with it (and its comparison plane): nothing keeps
    the port with no shim behind it."""
    proc, address, _ = served
    assert await _deposits(address, 5) == []
    proc.kill()
    await proc.wait()
    host, _, port = address.rpartition(":")

    async def refused() -> bool:
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            return True
        writer.close()
        return False

    for _ in range(500):
        if await refused():
            return
        await asyncio.sleep(0.02)
    pytest.fail("Envoy still listens after its shim was killed")


def envoy_pid(pid: int) -> int | None:
    """The Envoy among the children of process `pid`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if Path(f"/proc/{child}/comm").read_text().strip() == "envoy":
                return int(child)
    return None


def _nice(pid: int) -> int:
    """The nice value of process `pid`'s main thread (field 19 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


async def test_the_comparison_plane_yields_the_cpu_to_envoy(
    served: tuple[asyncio.subprocess.Process, str, int],
) -> None:
    """The comparison plane runs [envoy] comparison_nice (10) below Envoy, which keeps the priority the
    shim was started with (as does the supervisor that runs them both)."""
    proc, address, plane = served
    assert await _deposits(address, 5) == []
    envoy = envoy_pid(proc.pid)
    assert envoy is not None
    assert (_nice(plane), _nice(envoy), _nice(proc.pid)) == (10, 0, 0)


async def test_comparison_nice_0_leaves_the_priority_alone(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    config.write_text("[envoy]\ncomparison_nice = 0\n", encoding="utf-8")
    async with shim_process(
        *("--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--dataplane", "envoy"),
        *("--config", config, "--store", tmp_path / "shim.db", "--diff-log", os.devnull),
    ) as shim:
        assert shim.ready["comparison_nice"] == 0
        assert await _deposits(shim.ready["listen"], 3) == []
        assert _nice(shim.ready["pid"]) == 0


async def test_a_write_whose_copy_is_cut_short_puts_its_key_out_of_step_saying_so() -> None:
    """The client cancels before Bank answers: Envoy's record of the call ends the copy before the primary's
    status, and the write's key is marked out of step, the reason naming the lost copy and why."""
    from shim.routing import MethodSettings
    from tests._proto.grpc.testing import interop_pb2 as ipb
    from tests.backends import scripted_server
    from tests.helpers import registry_of

    async def slow(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        [_ async for _ in requests]
        await asyncio.sleep(5)
        return [b""]

    bank, bk = await scripted_server(slow), await scripted_server(slow)
    method = "/grpc.testing.TestService/UnaryCall"
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                dataplane="envoy",
                registry=registry_of(ipb.DESCRIPTOR),
                methods={method.lstrip("/"): MethodSettings(key=("response_size",))},
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            request = ipb.SimpleRequest(response_size=7).SerializeToString()
            call = channel.unary_unary(method)(request, timeout=30)
            await asyncio.sleep(0.5)  # Bank has it, and takes its time
            call.cancel()
            steps = shim.steps
            assert steps is not None
            await until(lambda: "7" in steps.keys, "the write's key out of step")
            reason = steps.keys["7"].reason
    finally:
        await bank.stop()
        await bk.stop()
    assert reason.startswith("its copy was lost (the client went away before the primary's status"), reason
    assert reason.endswith("whether either side applied it is unknown")


def _envoy_stat(admin: str, name: str) -> float:
    """One of Envoy's ext_proc counters (`name`: its last part), summed over its filters."""
    lines = envoy_admin_get(admin, "/stats?filter=ext_proc").splitlines()
    return sum(float(line.rpartition(": ")[2]) for line in lines if line.split(": ")[0].endswith("." + name))


def _envoy_admin(plane: int) -> str:
    """The address of Envoy's admin interface, from the folder the comparison plane shares with Envoy."""
    environ = dict(e.partition(b"=")[::2] for e in Path(f"/proc/{plane}/environ").read_bytes().split(b"\0"))
    return (
        (Path(environ[b"SHIM_COMPARISON_PLANE"].decode()) / "admin-address")
        .read_text(encoding="utf-8")
        .strip()
    )


def _sum(port: int, prefix: str) -> float:
    """The sum of the shim's metrics on `port` whose sample starts with `prefix`."""
    return sum(v for k, v in _metrics(port).items() if k.startswith(prefix))


def _on_envoy(*flags: object) -> contextlib.AbstractAsyncContextManager[ShimProcess]:
    """`shim serve` on Envoy with the sample's config and metrics, Envoy holding copies for 1 s."""
    return shim_process(
        *("--listen", "127.0.0.1:0", "--dataplane", "envoy", "--metrics", "127.0.0.1:0"),
        *("--config", SAMPLE / "shim.toml", "--diff-log", os.devnull, "--shadow-timeout", "1s", *flags),
    )


async def _deposits_while_the_plane_is_stopped(shim: ShimProcess) -> str:
    """An OpenAccount (the account exists) and 20 deposits through Envoy while the comparison plane is
    stopped, until Envoy has dropped their 21 copies; then the plane goes on. Envoy's admin address."""
    plane = shim.ready["pid"]
    admin = await asyncio.to_thread(_envoy_admin, plane)
    os.kill(plane, signal.SIGSTOP)
    try:
        assert await _deposits(shim.ready["listen"], 20) == []
        await until(lambda: _envoy_stat(admin, "streams_closed") >= 21, "Envoy dropped the copies", 30)
    finally:
        os.kill(plane, signal.SIGCONT)
    return admin


async def test_copies_envoy_drops_before_the_plane_reads_them_are_in_the_evidence(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The comparison plane stopped past the time Envoy holds a copy for it (the shadow timeout, 1 s here):
    Envoy drops the copies the plane has not read. Those the plane never received are calls it did not
    see; those it received only as Envoy dropped them are lost under their method (Envoy names it as the
    stream opens), each a write not mirrored. Every dropped call is in the evidence, once."""
    bank, bk = ledgers
    store = tmp_path / "shim.db"
    async with _on_envoy("--bank", bank.address, "--bk", bk.address, "--store", store) as shim:
        port = int(shim.ready["metrics"].rpartition(":")[2])
        compared = "shim_comparisons_total{"
        assert await _deposits(shim.ready["listen"], 5) == []
        await until(lambda: _sum(port, compared) >= 6, "the first calls compared")  # their copies taken
        admin = await _deposits_while_the_plane_is_stopped(shim)
        await until(lambda: _sum(port, compared) >= 6 + 21, "every call dropped in the evidence", 30)
        figures = await asyncio.to_thread(_metrics, port)
        closed = await asyncio.to_thread(_envoy_stat, admin, "streams_closed")
    counted = {k: v for k, v in figures.items() if k.startswith(compared)}
    assert closed == 21
    assert sum(counted.values()) == 6 + 21, counted  # none twice
    skipped = {k: v for k, v in counted.items() if 'verdict="skipped"' in k}
    assert sum(skipped.values()) == 21, counted
    lost = {k: v for k, v in figures.items() if k.startswith('shim_events_total{event="copies_lost"')}
    assert set(lost) <= {  # each lost copy under its method, never "(not described)"
        f'shim_events_total{{event="copies_lost",method="/bank.v1.Ledger/{m}"}}'
        for m in ("Deposit", "OpenAccount")
    }, lost
    unseen = skipped.get(f'shim_comparisons_total{{method="{UNSEEN}",verdict="skipped"}}', 0)
    assert unseen + sum(lost.values()) == 21, (skipped, lost)
    # after the shim stopped (its last count of what Envoy gave up on), still every call once
    with contextlib.closing(sqlite3.connect(store)) as db:
        stored = dict(db.execute("SELECT verdict, COUNT(*) FROM comparisons GROUP BY verdict").fetchall())
    assert sum(stored.values()) == 6 + 21, stored
    assert stored["skipped"] == 21, stored


async def test_writes_whose_copies_envoy_dropped_are_counted_lost_in_the_recording(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Recording in bank mode, the comparison plane stopped past the time Envoy holds a copy: the writes
    whose copies Envoy dropped are not in the recording, and its end line counts each as lost, so that a
    replay of it knows the state it starts from is unknown."""
    bank, _ = ledgers
    recording = tmp_path / "traffic.jsonl"
    async with _on_envoy("--mode", "bank", "--bank", bank.address, "--record", recording) as shim:
        port = int(shim.ready["metrics"].rpartition(":")[2])
        assert await _deposits(shim.ready["listen"], 5) == []
        # the first copies taken whole (the primary's answer timed) before the plane stops
        await until(lambda: _sum(port, "shim_primary_latency_seconds_count") >= 6, "the first copies taken")
        await _deposits_while_the_plane_is_stopped(shim)
        lost = 'shim_events_total{event="recording_lost"'
        await until(lambda: _sum(port, lost) >= 21, "every write dropped counted lost", 30)
        assert await shim.stop() == 0
    ending = Recording(recording).check()
    assert (ending.calls, ending.lost) == (6, 21)  # every call once: recorded, or counted lost


def _envoy_stats(admin: str, pattern: str) -> dict[str, float]:
    """Envoy's counters and gauges whose names match `pattern` (a regular expression)."""
    query = urllib.parse.urlencode({"filter": pattern})
    lines = envoy_admin_get(admin, f"/stats?{query}").splitlines()
    out = {}
    for line in lines:
        name, _, value = line.partition(": ")
        with contextlib.suppress(ValueError):  # histograms
            out[name] = float(value)
    return out


async def test_a_hung_plane_never_holds_back_the_clients(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The comparison plane stopped while calls with large requests go through: Envoy queues their copies
    for it, far beyond its default buffer for a connection (1 MiB), and drops them once it has held them
    `deferred_close_timeout`. It never pauses the clients' calls for them (with its default limit, it
    did: a copy it cannot write slowed the call it was a copy of), and no call fails."""
    bank, bk = ledgers
    async with _on_envoy("--bank", bank.address, "--bk", bk.address, "--store", tmp_path / "shim.db") as shim:
        plane = shim.ready["pid"]
        admin = await asyncio.to_thread(_envoy_admin, plane)
        assert await _deposits(shim.ready["listen"], 5) == []
        os.kill(plane, signal.SIGSTOP)
        try:
            errors = await _deposits(shim.ready["listen"], 200, reference="r" * 64 * 1024)  # 13 MB
            await until(lambda: _envoy_stat(admin, "streams_closed") >= 201, "Envoy dropped the copies", 30)
            held = await asyncio.to_thread(
                _envoy_stats, admin, r"^cluster\.processor\.upstream_flow_control_backed_up_total$"
            )
        finally:
            os.kill(plane, signal.SIGCONT)
    assert errors == []
    # Envoy never held back a call for its copy (Bank's own flow control may hold back a large request, as
    # it would without the shim)
    assert held == {"cluster.processor.upstream_flow_control_backed_up_total": 0}, held


async def _flood_while_the_plane_is_stopped(shim: ShimProcess, admin: str) -> int:
    """Calls through Envoy while the comparison plane is stopped, until Envoy's flood protection closes its
    connection to the processor; then the plane goes on. How many calls."""
    plane = shim.ready["pid"]
    flood = r"^cluster\.processor\.http2\.outbound(_control)?_flood$"
    os.kill(plane, signal.SIGSTOP)
    try:
        calls = 0
        while not sum((await asyncio.to_thread(_envoy_stats, admin, flood)).values()):
            # large copies fill the connection (Envoy holds the rest), then each copy dropped queues a
            # reset for the stream, until more are queued than Envoy allows
            assert calls < 6000, "Envoy never closed the connection"
            reference = "r" * 64 * 1024 if calls < 200 else ""
            assert await _deposits(shim.ready["listen"], 100, reference=reference) == []
            calls += 101  # the account is opened again each time (it exists)
    finally:
        os.kill(plane, signal.SIGCONT)
    return calls


async def test_copies_lost_with_a_connection_envoy_closed_are_in_the_evidence(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The comparison plane stopped long enough for Envoy's flood protection to close its connection to the
    processor: the copies on that connection, which Envoy counts neither closed nor failed, are all in
    the evidence, as are all the others it gave up on, each once: none missing, none both recorded under
    its method and counted unseen (as one the processor answered just as Envoy gave up on it was, one in
    thousands beside two CPU hogs, before the processor's answers were set against Envoy's count)."""
    bank, bk = ledgers
    store = tmp_path / "shim.db"
    async with _on_envoy("--bank", bank.address, "--bk", bk.address, "--store", store) as shim:
        port = int(shim.ready["metrics"].rpartition(":")[2])
        plane = shim.ready["pid"]
        admin = await asyncio.to_thread(_envoy_admin, plane)
        compared = "shim_comparisons_total{"
        assert await _deposits(shim.ready["listen"], 5) == []
        await until(lambda: _sum(port, compared) >= 6, "the first calls compared")
        calls = await _flood_while_the_plane_is_stopped(shim, admin)
        await until(lambda: _sum(port, compared) >= 6 + calls, "every call in the evidence", 60)
        assert await shim.stop() == 0
    with contextlib.closing(sqlite3.connect(store)) as db:
        stored = dict(db.execute("SELECT verdict, COUNT(*) FROM comparisons GROUP BY verdict").fetchall())
        unseen = db.execute("SELECT COUNT(*) FROM comparisons WHERE method = ?", (UNSEEN,)).fetchone()[0]
    assert sum(stored.values()) == 6 + calls, stored  # each once
    assert 0 < unseen <= calls, (unseen, calls)


def _envoy_of(supervisor: int) -> int | None:
    """The pid of the Envoy a supervisor runs now (None while it has none)."""
    try:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except FileNotFoundError:
        raise AssertionError(f"the supervisor ({supervisor}) is gone") from None
    for child in children:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == "envoy":
                return int(child)
    return None


async def _deposit_once_served(address: str, within: float = 30.0) -> None:
    """A deposit through `address`, tried until Bank answers one (a new connection each time)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with aio.insecure_channel(address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            try:
                await stub.Deposit(pb.DepositRequest(account_id="A1", amount="1.00"), timeout=2)
                return
            except aio.AioRpcError as exc:
                if exc.code().name != "UNAVAILABLE":  # Bank's answer (no such account, say)
                    return
        assert asyncio.get_running_loop().time() < deadline, "no call answered through the new Envoy"
        await asyncio.sleep(0.05)


async def _kill_envoy_until_started_again(shim: ShimProcess) -> None:
    """Kill the supervisor's Envoy; return once the one it starts again answers a call on the shim's port."""
    supervisor = shim.proc.pid
    first = _envoy_of(supervisor)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await until(lambda: _envoy_of(supervisor) not in (None, first), "Envoy started again", 30)
    await _deposit_once_served(shim.ready["listen"])


async def test_envoy_started_again_serves_on_the_port_the_clients_were_told(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A listener asked for on port 0: Envoy killed and started again by the supervisor binds the port it
    bound first (it bound another one, and the clients lost the shim)."""
    bank, bk = ledgers
    async with _on_envoy("--bank", bank.address, "--bk", bk.address, "--store", tmp_path / "shim.db") as shim:
        # an Envoy that served, and whose copy was compared: one killed as it starts (before the supervisor
        # saw it bound) stops the shim, as an Envoy that cannot start does
        await _deposit_once_served(shim.ready["listen"])
        port = int(shim.ready["metrics"].rpartition(":")[2])
        await until(lambda: _sum(port, "shim_comparisons_total{") >= 1, "the first call compared")
        await _kill_envoy_until_started_again(shim)
        started_again = await shim.until_event("Envoy started again")
    assert started_again["port"] == int(shim.ready["listen"].rpartition(":")[2])


async def test_copies_an_envoy_started_again_drops_are_in_the_evidence(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Envoy killed, and started again by the supervisor under the running comparison plane: the new Envoy
    counts from 0 (its stats are its own), the plane's own counts go on. The copies the new Envoy then
    gives up on are each in the evidence, once, as before the restart: those the plane never saw counted
    unseen (before, the processor's earlier answers were set against the new Envoy's count, and hid as
    many)."""
    bank, bk = ledgers
    store = tmp_path / "shim.db"
    async with _on_envoy("--bank", bank.address, "--bk", bk.address, "--store", store) as shim:
        port = int(shim.ready["metrics"].rpartition(":")[2])
        compared = "shim_comparisons_total{"
        assert await _deposits(shim.ready["listen"], 300) == []
        await until(lambda: _sum(port, compared) >= 301, "the first calls compared")
        await _kill_envoy_until_started_again(shim)
        await until(lambda: _sum(port, compared) >= 302, "the first call through the new Envoy compared")
        before = _sum(port, compared)
        admin = await asyncio.to_thread(_envoy_admin, shim.ready["pid"])
        calls = await _flood_while_the_plane_is_stopped(shim, admin)
        await until(lambda: _sum(port, compared) >= before + calls, "every call in the evidence", 60)
        assert await shim.stop() == 0
    with contextlib.closing(sqlite3.connect(store)) as db:
        stored = dict(db.execute("SELECT verdict, COUNT(*) FROM comparisons GROUP BY verdict").fetchall())
        unseen = db.execute("SELECT COUNT(*) FROM comparisons WHERE method = ?", (UNSEEN,)).fetchone()[0]
    assert sum(stored.values()) == before + calls, stored  # each once
    assert 0 < unseen <= calls, (unseen, calls)
