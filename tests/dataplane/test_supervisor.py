"""`shim serve` on Envoy: a comparison plane that is killed costs the clients nothing, and comes back.

The real command runs as a process (its supervisor, Envoy, and the comparison plane as the supervisor's
child), in front of the sample Bank and BK on free ports; the test kills the plane with SIGKILL while a
client keeps calling, and checks every call, the plane's return, and what the store says of the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from sample_ledger.server import serve as serve_ledger
from shim.dataplane import envoy
from shim.dataplane.unseen import UNSEEN
from shim.recording.format import PARTIAL, Recording
from tests.backends import scripted_server
from tests.helpers import until
from tests.processes import SERVE, ShimProcess, shim_process

ROOT = Path(__file__).resolve().parents[2]
STEP = 30.0  # seconds any one step may take before the test fails

pytestmark = pytest.mark.skipif(envoy.binary() is None, reason="no Envoy on this platform")


async def _calls(address: str, stop: asyncio.Event, errors: list[str], done: list[int]) -> None:
    """Deposits on one account, one after the other, until `stop`: every failure is kept."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", owner_name="Ada"), timeout=5)
        while not stop.is_set():
            try:
                await stub.Deposit(pb.DepositRequest(account_id="S1", amount="1.00"), timeout=5)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
            done[0] += 1


def _serve(bank: str, bk: str, db: Path, cwd: Path, *more: str) -> AbstractAsyncContextManager[ShimProcess]:
    """`shim serve` on Envoy, in front of `bank` and `bk`, storing in `db`."""
    return shim_process(
        *("--listen", "127.0.0.1:0", "--bank", bank, "--bk", bk, "--dataplane", "envoy", "--store", db),
        *("--descriptor-set", ROOT / "sample_ledger" / "bank.binpb", *more),
        cwd=cwd,
    )


def _scraped(address: str) -> bytes:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=STEP) as answer:
        body: bytes = answer.read()
    return body


def _stored(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


async def test_a_killed_comparison_plane_costs_the_clients_nothing_and_comes_back(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL to the comparison plane: Envoy answers every call meanwhile; the supervisor starts the plane
    again, which mirrors and compares again, serves its metrics and admin API where the killed one did
    (both given port 0), and records the calls whose copies it never saw; SIGTERM then stops it all, with
    status 0."""
    bank, bk = ledgers
    db = tmp_path / "shim.db"
    recording = tmp_path / "traffic.jsonl"
    config = tmp_path / "shim.toml"
    config.write_text('[admin]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", "kept-ports")
    more = ("--record", str(recording), "--metrics", "127.0.0.1:0", "--config", str(config))
    stop, errors, done = asyncio.Event(), [], [0]
    try:
        async with _serve(bank.address, bk.address, db, tmp_path, *more) as serving:
            ready = serving.ready
            assert ready["dataplane"] == "envoy"
            assert ready["pid"] != serving.proc.pid  # the plane is the supervisor's child
            client = asyncio.create_task(_calls(ready["listen"], stop, errors, done))
            await until(lambda: done[0] >= 20, "calls before the kill", within=STEP)
            partial = recording.with_name(recording.name + PARTIAL)

            def recorded() -> bool:  # what the plane recorded is on disk, where its death cannot reach it
                return any(c.method.endswith("/Deposit") for c in Recording(partial, truncated=True).calls())

            await until(recorded, "deposits recorded before the kill", within=STEP)
            os.kill(ready["pid"], signal.SIGKILL)
            killed_at = done[0]
            again = await serving.until_event("ready", 2)
            assert again["pid"] != ready["pid"]
            assert again["listen"] == ready["listen"]  # Envoy never stopped: the same listener
            assert not ready["metrics"].endswith(":0")
            assert not ready["admin"].endswith(":0")
            # where the killed plane served, unless another process took the port meanwhile (a busy suite's
            # connections take ports from the same range): a new one then, which the plane says
            moved = {
                e.get("was")
                for e in serving.events()
                if "port the plane before served on is taken" in e["event"]
            }
            for what in ("metrics", "admin"):
                assert again[what] == ready[what] or ready[what] in moved, (what, again[what], ready[what])
            assert b"shim_comparisons_total" in await asyncio.to_thread(_scraped, again["metrics"])
            assert any(e.get("event", "").startswith("the comparison plane exited") for e in serving.events())
            after = done[0]
            await until(lambda: done[0] >= after + 20, "calls after the plane came back", within=STEP)
            stop.set()
            await asyncio.wait_for(client, STEP)
            assert errors == []
            assert done[0] > killed_at + 20

            # the plane started again mirrors and compares (the deposits it never saw put BK's balance of S1
            # behind Bank's: what it finds is no match, but it is compared)
            replica = again["replica"]  # its name in the store (host:pid:tag)

            def compared() -> int:
                sql = (
                    f"SELECT COUNT(*) FROM comparisons WHERE replica = '{replica}'"
                    " AND verdict IN ('match', 'mismatch', 'tainted')"
                )
                return int(_stored(db, sql)[0][0])

            await until(lambda: compared() > 0, "comparisons by the plane started again", within=STEP)
            assert await serving.stop() == 0
            # the calls made while no plane ran are on record as calls the shim did not see, never missing
            unseen = _stored(db, f"SELECT COUNT(*) FROM comparisons WHERE method = '{UNSEEN}'")[0][0]
            assert unseen > 0
            # the killed plane's recording, cut short, is kept beside the one the plane started again ended
            kept = [p for p in os.listdir(tmp_path) if p.startswith("traffic-") and p.endswith(PARTIAL)]
            assert len(kept) == 1
            cut = Recording(tmp_path / kept[0], truncated=True)
            assert any(call.method.endswith("/Deposit") for call in cut.calls())
            assert Recording(recording).check().calls > 0
    finally:
        stop.set()  # the client's calls end with the test, whatever it found


async def _health(address: str) -> str:
    """The overall health through the shim's listener, as a probe gets it: its status, or the call's code."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


async def test_a_plane_started_again_while_its_store_is_out_answers_health_and_starts_once_it_is_back(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The comparison plane killed while its store cannot be opened: the plane started again waits for the
    store, and answers the health checks meanwhile, SERVING, while Envoy serves the clients' calls; once
    the store is back it starts, and the calls it did not see are on record. Before, each plane started
    again exited (status 2), the health checks failed all along, and a liveness probe would have restarted
    a pod whose Envoy served the clients, into a pod that could not start (its store)."""
    bank, bk = ledgers
    db, moved = tmp_path / "shim.db", tmp_path / "moved.db"
    stop, errors, done = asyncio.Event(), [], [0]
    try:
        async with _serve(bank.address, bk.address, db, tmp_path) as serving:
            ready = serving.ready
            client = asyncio.create_task(_calls(ready["listen"], stop, errors, done))
            await until(lambda: done[0] >= 20, "calls before the kill", within=STEP)
            db.rename(moved)  # the store cannot be opened (its -wal and -shm stay, named for it)
            db.mkdir()
            os.kill(ready["pid"], signal.SIGKILL)
            await until(lambda: "cannot open store" in "".join(serving.stderr), "a plane started again")
            await until(lambda: done[0] >= 40, "calls while the plane waits", within=STEP)
            seen = []
            for _ in range(4):  # probes, a second apart: the plane answers them while it waits
                seen.append(await _health(ready["listen"]))
                await asyncio.sleep(1.0)
            assert seen == ["SERVING"] * 4
            assert any(
                e["event"].startswith("the comparison plane started again cannot open its store")
                for e in serving.events()
            )
            db.rmdir()
            moved.rename(db)  # the store is back
            again = await serving.until_event("ready", 2)
            assert again["pid"] not in (ready["pid"], serving.proc.pid)
            assert await _health(ready["listen"]) == "SERVING"
            stop.set()
            await asyncio.wait_for(client, STEP)
            assert errors == []
            assert await serving.stop() == 0
    finally:
        stop.set()
    unseen = _stored(db, f"SELECT COUNT(*) FROM comparisons WHERE method = '{UNSEEN}'")[0][0]
    assert unseen > 0  # the calls made while no plane compared: on record, never missing


def _nice(pid: int) -> set[int]:
    """The nice values of the threads of process `pid`."""
    return {os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def _envoy_of(supervisor: int) -> int:
    """The pid of the Envoy a supervisor runs."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return next(int(c) for c in children if Path(f"/proc/{c}/comm").read_text().strip() == "envoy")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the threads' nice values from /proc")
async def test_the_comparison_plane_runs_below_envoy_in_the_supervisors_session(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The plane's threads run `comparison_nice` below Envoy's, in the session `shim serve` runs in: where
    Linux shares the CPU out by session first (autogroup), a plane in a session of its own would get a
    whole session's share, and its nice value would rank it only against itself. That made the plane take
    Bank's CPU in `shadow` mode (a client p50 of over 100 ms at 700 calls/s, against 3.6 ms)."""
    bank, bk = ledgers
    async with _serve(bank.address, bk.address, tmp_path / "shim.db", tmp_path) as serving:
        ready, supervisor = serving.ready, serving.proc.pid
        plane = int(ready["pid"])
        assert os.getsid(plane) == os.getsid(supervisor)
        assert os.getpgid(plane) != os.getpgid(supervisor)  # a Ctrl-C reaches the supervisor alone
        envoy_nice = _nice(_envoy_of(supervisor))
        assert envoy_nice == _nice(supervisor)
        assert _nice(plane) == {min(n + ready["comparison_nice"], 19) for n in envoy_nice}
        assert ready["comparison_nice"] == 10  # the default
        assert await serving.stop() == 0


async def test_sigterm_right_after_the_calls_leaves_none_of_their_copies_behind(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """SIGTERM as the last of many calls is answered: the comparison plane takes every copy Envoy still
    holds before Envoy stops (within the grace period), so each call is compared, or recorded as one the
    shim did not see: none is lost without a trace. (Envoy's copies trail the answers; the plane used to
    stop Envoy with them still inside.)"""
    bank, bk = ledgers
    db = tmp_path / "shim.db"
    calls = 300
    async with _serve(bank.address, bk.address, db, tmp_path) as serving:
        async with grpc.aio.insecure_channel(serving.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="T1", owner_name="Ada"), timeout=5)
            await asyncio.gather(
                *(
                    stub.Deposit(pb.DepositRequest(account_id="T1", amount="1.00"), timeout=5)
                    for _ in range(calls)
                )
            )
        assert await serving.stop() == 0
    stored = _stored(db, "SELECT COUNT(*) FROM comparisons")[0][0]
    assert stored == calls + 1  # the account opened, and every deposit


async def test_an_envoy_killed_as_it_starts_is_started_again_and_the_shim_serves(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Envoy killed by a signal as it starts (the OOM killer, an operator) refused nothing: the shim
    starts it again and serves, where it used to stop as if Envoy could not start. Here the stand-in for
    Envoy (`SHIM_ENVOY`) kills itself with SIGKILL the first time it is started, then runs Envoy."""
    bank, bk = ledgers
    real, killed = envoy.binary(), tmp_path / "killed-once"
    stand_in = tmp_path / "envoy"
    stand_in.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" --mode validate "*) exec "{real}" "$@";; esac\n'
        f'if [ ! -e "{killed}" ]; then : > "{killed}"; kill -9 $$; fi\n'
        f'exec "{real}" "$@"\n',
        encoding="utf-8",
    )
    stand_in.chmod(0o755)
    monkeypatch.setenv("SHIM_ENVOY", str(stand_in))
    async with _serve(bank.address, bk.address, tmp_path / "shim.db", tmp_path) as serving:
        async with grpc.aio.insecure_channel(serving.ready["listen"]) as channel:
            opened = await pb_grpc.LedgerStub(channel).OpenAccount(
                pb.OpenAccountRequest(account_id="K1", owner_name="Ada"), timeout=STEP
            )
        said = "".join(serving.stderr)
    assert killed.exists()  # it was killed once
    assert opened.account_id == "K1"
    assert "Envoy was killed as it started; starting it again" in said


async def test_an_envoy_that_cannot_start_is_one_clear_error_and_the_plane_leaves_nothing_behind(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Envoy exits by itself as it starts (a stand-in, `SHIM_ENVOY`, that passes validation and then exits
    1): the shim exits 2 naming it, and the comparison plane, stopped as it waited for Envoy, undoes its
    start. Before, it died where it stood, and its comparison processes' semaphores were reported leaked
    on the shim's stderr."""
    bank, bk = ledgers
    stand_in = tmp_path / "envoy"
    stand_in.write_text(
        f'#!/bin/sh\ncase " $* " in *" --mode validate "*) exec "{envoy.binary()}" "$@";; esac\nexit 1\n',
        encoding="utf-8",
    )
    stand_in.chmod(0o755)
    flags = ["--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--dataplane", "envoy"]
    flags += [
        "--store",
        str(tmp_path / "shim.db"),
        "--descriptor-set",
        str(ROOT / "sample_ledger" / "bank.binpb"),
    ]
    done = await asyncio.create_subprocess_exec(
        *SERVE, *flags, cwd=tmp_path, env={**os.environ, "SHIM_ENVOY": str(stand_in)},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(done.communicate(), STEP)
    said = err.decode().splitlines()
    assert done.returncode == 2
    assert said[-1] == "shim: error: Envoy did not start: it exited with status 1 (no reason given)"
    assert [line for line in said if "leaked" in line or "resource_tracker" in line] == []


def _slow_plane(folder: Path) -> dict[str, str]:
    """An environment in which the comparison plane, and only it, says it started (its pid in
    `folder / "plane"`) and then takes 30 s before anything of the shim runs: no signal handler of its own
    yet, as a plane still importing its modules."""
    (folder / "sitecustomize.py").write_text(
        "import os, pathlib, time\n"
        "if 'SHIM_COMPARISON_PLANE' in os.environ:\n"
        f"    pathlib.Path({str(folder / 'plane')!r}).write_text(str(os.getpid()))\n"
        "    time.sleep(30)\n",
        encoding="utf-8",
    )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


async def _started_with_a_slow_plane(tmp_path: Path) -> tuple[asyncio.subprocess.Process, int]:
    """`shim serve` on Envoy (no Bank needed), once its comparison plane has started: (the shim, the
    plane's pid)."""
    flags = ["--listen", "127.0.0.1:0", "--bank", "127.0.0.1:1", "--dataplane", "envoy"]
    shim = await asyncio.create_subprocess_exec(
        *SERVE, *flags, cwd=tmp_path, env=_slow_plane(tmp_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    marker = tmp_path / "plane"
    await until(lambda: marker.exists() and marker.read_text().strip() != "", "the plane started", STEP)
    return shim, int(marker.read_text())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_before_the_plane_can_take_it_stops_the_shim_as_asked(
    tmp_path: Path, signum: int
) -> None:
    """SIGTERM (or SIGINT) to `shim serve` while its comparison plane has not yet set its handlers: the
    signal passed on ends the plane, and the shim exits 0, as a stop asked for, with nothing said of it.
    Before, it exited with the plane's status, -15: 241, and no line."""
    shim, _plane = await _started_with_a_slow_plane(tmp_path)
    shim.send_signal(signum)
    _, err = await asyncio.wait_for(shim.communicate(), STEP)
    assert (shim.returncode, err.decode().splitlines()) == (0, [])


async def test_a_plane_killed_before_it_is_ready_is_one_clear_error(tmp_path: Path) -> None:
    """The comparison plane killed (SIGKILL, as the out-of-memory killer does) before it was ready: the
    shim exits 2 with one line saying so. Before, it exited with the plane's status, -9: 247, and no line."""
    shim, plane = await _started_with_a_slow_plane(tmp_path)
    os.kill(plane, signal.SIGKILL)
    _, err = await asyncio.wait_for(shim.communicate(), STEP)
    said = err.decode().splitlines()
    assert (shim.returncode, said) == (
        2,
        ["shim: error: the comparison plane was killed by SIGKILL before it was ready"],
    ), said


async def test_a_plane_started_again_runs_on_the_config_in_force_not_on_an_edit_not_yet_signalled(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The config file edited to name another Bank (no SIGHUP), then the comparison plane killed: the plane
    started again runs on the config in force, the one Envoy runs on, so that the writes that go through
    Python (strict ordering) reach the Bank that Envoy's reads reach. Before, the new plane read the edited
    file: writes went to the other Bank, and the client could not read back what it had written. A SIGHUP
    then says the edit needs a restart, as it does for a plane that was never started again."""
    bank, bk = ledgers
    other = await serve_ledger("bank")
    config = tmp_path / "shim.toml"

    def naming(target: str) -> None:
        config.write_text(
            f'[ordering]\nstrict = true\n[upstreams.bank]\ntarget = "{target}"\n', encoding="utf-8"
        )

    naming(bank.address)
    try:
        async with shim_process(
            *("--config", config, "--listen", "127.0.0.1:0", "--bk", bk.address, "--dataplane", "envoy"),
            *("--store", tmp_path / "shim.db", "--descriptor-set", ROOT / "sample_ledger" / "bank.binpb"),
            cwd=tmp_path,
        ) as serving:
            naming(other.address)
            os.kill(serving.ready["pid"], signal.SIGKILL)
            again = await serving.until_event("ready", 2)
            assert again["bank"] == bank.address
            async with grpc.aio.insecure_channel(again["listen"]) as channel:
                stub = pb_grpc.LedgerStub(channel)
                await stub.OpenAccount(pb.OpenAccountRequest(account_id="E1", owner_name="Ada"), timeout=STEP)
                await stub.Deposit(pb.DepositRequest(account_id="E1", amount="5.00"), timeout=STEP)
                balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="E1"), timeout=STEP)
            assert balance.cash == "5.00"
            serving.proc.send_signal(signal.SIGHUP)  # the edit, signalled, is one that needs a restart
            said = await serving.until_event(
                "config reloaded; these changed settings need a restart and keep their values"
            )
            assert said["settings"] == ["upstreams.bank"]
    finally:
        await other.stop(None)


async def test_a_sighup_to_a_plane_before_its_code_runs_is_applied_once_it_serves(tmp_path: Path) -> None:
    """SIGHUP sent to the comparison plane itself while its interpreter starts (before any of the shim's
    code runs: a reload sent to every process of the shim), and to `shim serve`: the plane lives, serves,
    and reloads once it does. Before, the SIGHUP's default action ended the plane, and the shim with a
    start error."""
    go = tmp_path / "go"
    (tmp_path / "sitecustomize.py").write_text(
        "import os, pathlib, time\n"
        "if 'SHIM_COMPARISON_PLANE' in os.environ:\n"
        f"    pathlib.Path({str(tmp_path / 'plane')!r}).write_text(str(os.getpid()))\n"
        f"    while not pathlib.Path({str(go)!r}).exists():\n"
        "        time.sleep(0.01)\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    flags = ["--listen", "127.0.0.1:0", "--bank", "127.0.0.1:1", "--dataplane", "envoy"]
    proc = await asyncio.create_subprocess_exec(
        *SERVE, *flags, cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    shim = ShimProcess(proc, {}, [])

    async def read(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            shim.stderr.append(raw.decode())

    reader = asyncio.get_running_loop().create_task(read(proc.stderr))
    marker = tmp_path / "plane"
    try:
        await until(lambda: marker.exists() and marker.read_text().strip() != "", "the plane started", STEP)
        os.kill(int(marker.read_text()), signal.SIGHUP)
        proc.send_signal(signal.SIGHUP)
        go.touch()
        shim.ready = await shim.until_event("ready")
        await shim.until_event("config reloaded")
        exited = [e for e in shim.events() if e.get("event", "").startswith("the comparison plane exited")]
        assert await shim.stop() == 0
    finally:
        go.touch()
        if proc.returncode is None:
            await shim.kill_9()
        await asyncio.wait_for(reader, STEP)
    assert exited == []
    assert shim.ready["pid"] == int(marker.read_text())


async def test_sigterm_refuses_new_calls_before_bank_and_lets_those_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM with calls in flight: they finish (within the grace period); the new calls the clients
    make meanwhile, on the connection they have, are refused UNAVAILABLE by Envoy without reaching Bank.
    Before, Envoy sent them on to Bank, then cut them as it stopped: UNAVAILABLE ("not processed, retry")
    for writes Bank had done."""
    received: list[bytes] = []
    release = asyncio.Event()

    async def held(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        received.extend([r async for r in requests])
        await release.wait()
        return [b"done"]

    async def ended(call: grpc.aio.UnaryUnaryCall[bytes, bytes]) -> grpc.StatusCode:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call
        return await call.code()

    bank = await scripted_server(held)
    try:
        args = ("--listen", "127.0.0.1:0", "--bank", bank.address, "--mode", "bank", "--dataplane", "envoy")
        args += ("--descriptor-source", "files")  # no reflection asked of Bank
        async with shim_process(*args, "--store", tmp_path / "shim.db", cwd=tmp_path) as serving:
            async with grpc.aio.insecure_channel(serving.ready["listen"]) as channel:
                write = channel.unary_unary("/t.Svc/Write")
                early = asyncio.ensure_future(ended(write(b"early", timeout=STEP)))
                await until(lambda: received == [b"early"], "Bank has the call in flight")
                serving.proc.send_signal(signal.SIGTERM)
                late: dict[bytes, asyncio.Future[grpc.StatusCode]] = {}
                while not any(f.done() and f.result() is grpc.StatusCode.UNAVAILABLE for f in late.values()):
                    assert len(late) < 500, "no new call refused"
                    name = b"late-%d" % len(late)
                    late[name] = asyncio.ensure_future(ended(write(name, timeout=STEP)))
                    await asyncio.sleep(0.02)  # the pace of the client's new calls
                release.set()
                codes = {name: await f for name, f in late.items()}
                first = await early
            assert await asyncio.wait_for(serving.proc.wait(), STEP) == 0
    finally:
        release.set()
        await bank.stop()
    refused = {name for name, code in codes.items() if code is grpc.StatusCode.UNAVAILABLE}
    assert not refused & set(received), "Bank served calls the client was told were refused"
    assert first == grpc.StatusCode.OK
    assert set(codes.values()) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}


async def test_sigterm_while_no_plane_serves_lets_the_calls_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM while no comparison plane serves (killed, and started again with a store it cannot open):
    the supervisor drains Envoy itself, so the write Bank is doing finishes, and the new calls on
    the client's connection are refused UNAVAILABLE without reaching Bank. Before, the drain was the
    plane's alone: with none serving, Envoy was stopped at once, and the client was told UNAVAILABLE for a
    write Bank had done (a retry would do it twice)."""
    received: list[bytes] = []
    release = asyncio.Event()

    async def held(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        received.extend([r async for r in requests])
        await release.wait()
        return [b"done"]

    async def answered(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        return [b"done"]

    async def ended(call: grpc.aio.UnaryUnaryCall[bytes, bytes]) -> tuple[grpc.StatusCode, str]:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call
        return await call.code(), await call.details() or ""

    bank, bk = await scripted_server(held), await scripted_server(answered)
    db = tmp_path / "shim.db"
    try:
        args = ("--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--mode", "bank")
        args += ("--dataplane", "envoy", "--descriptor-source", "files", "--store", str(db))
        async with shim_process(*args, cwd=tmp_path) as serving:
            db.rename(tmp_path / "moved.db")
            db.mkdir()  # the store cannot be opened: no plane started again serves
            os.kill(int(serving.ready["pid"]), signal.SIGKILL)
            await until(lambda: "cannot open store" in "".join(serving.stderr), "a plane started again")
            async with grpc.aio.insecure_channel(serving.ready["listen"]) as channel:
                write = channel.unary_unary("/t.Svc/Write")
                early = asyncio.ensure_future(ended(write(b"deposit", timeout=STEP)))
                await until(lambda: received == [b"deposit"], "Bank has the write in flight")
                serving.proc.send_signal(signal.SIGTERM)
                late: dict[bytes, asyncio.Future[tuple[grpc.StatusCode, str]]] = {}
                while not any(
                    f.done() and f.result()[0] is grpc.StatusCode.UNAVAILABLE for f in late.values()
                ):
                    assert len(late) < 500, "no new call refused"
                    name = b"late-%d" % len(late)
                    late[name] = asyncio.ensure_future(ended(write(name, timeout=STEP)))
                    await asyncio.sleep(0.02)  # the pace of the client's new calls
                release.set()
                codes = {name: (await f)[0] for name, f in late.items()}
                first = await early
            assert await asyncio.wait_for(serving.proc.wait(), STEP) == 0
    finally:
        release.set()
        await bank.stop()
        await bk.stop()
    refused = {name for name, code in codes.items() if code is grpc.StatusCode.UNAVAILABLE}
    assert not refused & set(received), "Bank served calls the client was told were refused"
    assert first == (grpc.StatusCode.OK, ""), f"Bank did the write, and the client was told {first}"
    assert set(codes.values()) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert "stopping while no comparison plane serves" in "".join(serving.stderr)
