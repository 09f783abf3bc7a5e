"""`shim serve --workers N`: N processes on one port sharing one store (shim/workers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from shim.config import Upstream, build
from shim.workers import _of_worker
from tests.helpers import NEEDS_ENVOY, until
from tests.processes import SERVE, ShimProcess, shim_process
from tests.shim.test_evidence_store import BANK_BINPB, CALL_TIMEOUT, _shadow_args, _sqlite_sql, _until
from tests.shim.test_modes import AUTH, TOKEN

CONNECTIONS = 24  # client connections; the kernel spreads them over the workers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def _envoys(root: int) -> list[int]:
    """The Envoy processes among `root`'s descendants (a worker's Envoy is its child)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    found, below = [], {root}
    for _ in range(4):  # supervisor -> worker -> Envoy
        below |= {pid for pid, ppid in parents.items() if ppid in below}
    for pid in below - {root}:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "envoy":
                found.append(pid)
    return found


def _is_worker(pid: int) -> bool:
    """A process multiprocessing spawned (a worker), not its resource tracker."""
    return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()


async def _all_ready(shim: ShimProcess) -> dict[str, object]:
    """The supervisor's own ready line: every worker serves."""

    async def look() -> list[dict[str, object]]:
        return [json.loads(line) for line in shim.stderr if '"workers"' in line and '"ready"' in line]

    (line,) = await _until(look, bool, "the supervisor's ready line")
    return line


@pytest.mark.parametrize(
    "dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY), "python-unordered"]
)
async def test_workers_share_the_port_and_the_store_and_drain_on_sigterm(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, dataplane: str
) -> None:
    """Two workers: connections land on both (two replicas in the store), every call is mirrored and
    stored once, and SIGTERM drains both; the supervisor exits 0 and no worker outlives it. On Envoy each
    worker runs its own Envoy on the port, and none outlives the supervisor either. The workers order each
    key's writes across each other through the store (a ticket per key written); with
    `ordering.across_workers = false` they do not, and the supervisor says so."""
    bank, bk = ledgers
    path = tmp_path / "shim.db"
    plane, _, unordered = dataplane.partition("-")
    config = '[methods."bank.v1.Ledger/OpenAccount"]\nkey = ["account_id"]\n'
    config += "[envoy]\ncomparison_nice = 0\n"  # each worker's plane keeps up on a busy machine
    if unordered:
        config += "[ordering]\nacross_workers = false\n"
    (tmp_path / "shim.toml").write_text(config, encoding="utf-8")
    flags = ["--descriptor-set", BANK_BINPB, "--workers", "2", "--dataplane", plane]
    flags += ["--config", str(tmp_path / "shim.toml")]
    args = _shadow_args(bank, bk, path, *flags)
    async with shim_process(*args) as shim:
        ready = await _all_ready(shim)
        assert ready["workers"] == 2
        assert ready["listen"] == shim.ready["listen"]
        for n in range(CONNECTIONS):
            # a connection of its own, from a subchannel pool of its own: grpc's global pool may hand a new
            # channel the connection of one just closed, its teardown still under way on a loaded machine
            options = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(str(ready["listen"]), options=options) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await stub.OpenAccount(pb.OpenAccountRequest(account_id=f"W{n}"), timeout=CALL_TIMEOUT)
        sql = _sqlite_sql(path)

        async def stored() -> int:
            return int((await asyncio.to_thread(sql, "SELECT count(*) FROM comparisons"))[0][0])

        await _until(stored, lambda count: count >= CONNECTIONS, "every call stored")
        replicas = [row[0] for row in sql("SELECT DISTINCT replica FROM comparisons")]
        envoys = _envoys(shim.proc.pid)
        assert len(envoys) == (2 if plane == "envoy" else 0)
        assert await shim.stop() == 0, shim.stderr[-5:]
    assert len(replicas) == 2, replicas  # both workers served: 2**-23 odds that one took all
    warned = [e for e in shim.events() if e.get("event") == "workers order only their own calls"]
    tickets = sql("SELECT count(*), sum(issued), sum(done) FROM shim_key_order")
    if unordered:
        assert ["ordering.across_workers" in w["remedy"] for w in warned] == [True]
        assert tickets == [(0, None, None)]
    else:
        assert warned == []
        assert tickets == [(CONNECTIONS, CONNECTIONS, CONNECTIONS)]  # one write per account, each done
    assert sql("SELECT count(*) FROM comparisons") == [(CONNECTIONS,)]
    assert len(bk.servicer.book.accounts) == CONNECTIONS  # every write mirrored, by whichever worker
    pids = [int(replica.split(":")[1]) for replica in replicas]  # host:pid:tag
    assert not [pid for pid in pids + envoys if _alive(pid)]


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_worker_that_dies_stops_the_shim(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """A worker killed from outside: the supervisor stops the other and exits 1 (for a process manager
    to restart the whole shim), leaving no worker (and no worker's Envoy) behind."""
    bank, _ = ledgers
    args = ["--listen", "127.0.0.1:0", "--bank", bank.address, "--mode", "bank", "--workers", "2"]
    args += ["--dataplane", dataplane]
    async with shim_process(*args) as shim:
        await _all_ready(shim)
        workers = shim.children()
        shim_workers = [pid for pid in workers if _is_worker(pid)]
        assert len(shim_workers) >= 2
        envoys = _envoys(shim.proc.pid)
        assert len(envoys) == (2 if dataplane == "envoy" else 0)
        os.kill(shim_workers[0], signal.SIGKILL)
        assert await asyncio.wait_for(shim.proc.wait(), 20) == 1
    await _until(
        lambda: asyncio.sleep(0, [pid for pid in shim_workers + envoys if _alive(pid)]),
        lambda left: not left,
        "no worker and no Envoy left",
    )
    assert any('"a worker exited; stopping the others"' in line for line in shim.stderr)
    assert not any("workers order only their own calls" in line for line in shim.stderr)  # nothing mirrored


@pytest.mark.parametrize(("workers", "says"), [("0", "--workers"), ("65", "--workers: '65' is more than 64")])
def test_workers_must_be_a_positive_count_of_64_at_most(workers: str, says: str) -> None:
    """--workers 0 is a usage error, and so is more than 64 (100,000 workers were started one by one, and
    a stop among them could leave some serving), before anything starts."""
    done = subprocess.run(
        [*SERVE, "--bank", "127.0.0.1:1", "--workers", workers], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert says in done.stderr


def test_workers_in_the_config_are_64_at_most(tmp_path: Path) -> None:
    """The config's `workers` has the same bound as the flag."""
    (tmp_path / "shim.toml").write_text("workers = 65\n", encoding="utf-8")
    done = subprocess.run(
        [*SERVE, "--bank", "127.0.0.1:1", "--config", str(tmp_path / "shim.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.strip()) == (2, "shim: error: workers: 65 is not 1 to 64")


async def test_the_event_loop_is_uvloop_unless_the_config_says_asyncio(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """uvloop by default (installed with the shim); `event_loop = "asyncio"` keeps asyncio's; a bad value
    is a start error naming the key."""
    bank, _ = ledgers
    args = ["--listen", "127.0.0.1:0", "--bank", bank.address, "--mode", "bank"]
    async with shim_process(*args) as default:
        assert default.ready["event_loop"] == "uvloop"
    config = tmp_path / "shim.toml"
    config.write_text('event_loop = "asyncio"\n', encoding="utf-8")
    async with shim_process(*args, "--config", config) as plain:
        assert plain.ready["event_loop"] == "asyncio"
    config.write_text('event_loop = "trio"\n', encoding="utf-8")
    done = await asyncio.to_thread(
        subprocess.run, [*SERVE, *args, "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "event_loop: 'trio' is not one of auto, uvloop, asyncio" in done.stderr


def test_each_worker_serves_its_metrics_and_admin_api_on_its_own_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker i serves metrics and the admin API on the configured ports + i (port 0: any free one);
    with the admin token set and no [admin] listen, on the default admin port + i."""
    config = build(
        {
            "bank": Upstream("bank", "127.0.0.1:1"),
            "metrics_listen": "127.0.0.1:9100",
            "admin": {"listen": "127.0.0.1:0"},
        }
    )
    second = _of_worker(config, 2)
    assert (second.serving.metrics_listen, second.admin.listen) == ("127.0.0.1:9102", "127.0.0.1:0")
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", "secret")
    plain = _of_worker(build({"bank": Upstream("bank", "127.0.0.1:1")}), 1)
    assert (plain.serving.metrics_listen, plain.admin.listen) == ("", "127.0.0.1:9466")


async def test_a_switch_through_one_worker_applies_on_both_within_the_pause(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers share a SQLite store, which sends no notifications, and look at it every second
    (store.refresh): each, once it has seen the other live, looks for a pending switch every 20 ms, so four
    switches through alternate workers with switch_pause = 500 ms all apply on both (a worker that heard of
    a switch only at its next look, up to a second later, would leave the other holding past the pause: 1
    in 16 to pass four)."""
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    config.write_text('switch_pause = "500ms"\n[admin]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
    flags = ["--descriptor-set", BANK_BINPB, "--workers", "2", "--dataplane", "python", "--config", config]
    async with shim_process(*_shadow_args(bank, bk, tmp_path / "shim.db", *flags)) as shim:
        await _all_ready(shim)
        admins = [str(e["admin"]) for e in shim.events() if e.get("event") == "ready" and e.get("admin")]
        assert len(admins) == 2, admins

        async def views(admin: str) -> dict[str, apb.ReplicaModes]:
            async with grpc.aio.insecure_channel(admin) as channel:
                stub = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
                modes = await stub.GetModes(apb.GetModesRequest(), metadata=AUTH, timeout=CALL_TIMEOUT)
            return {view.replica: view for view in modes.replicas}

        listed = await _until(lambda: views(admins[0]), lambda v: len(v) == 2, "both workers' views")
        since = max(view.heartbeat for view in listed.values())
        # each worker has looked at the store (every second) since both were listed: two seconds have passed
        await _until(
            lambda: views(admins[0]),
            lambda v: min(view.heartbeat for view in v.values()) > since + 2.0,
            "a look at the store by each worker after both were listed",
        )
        for n, mode in enumerate(("bk-primary", "shadow", "bk-primary", "shadow")):
            async with grpc.aio.insecure_channel(admins[n % 2]) as channel:
                stub = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
                request = apb.SetModeRequest(mode=mode, reason="test", who="ops", force=True)
                answer = await stub.SetMode(request, metadata=AUTH, timeout=CALL_TIMEOUT)
            assert answer.default_mode == mode
            await _until(
                lambda other=admins[(n + 1) % 2]: views(other),
                lambda v, m=mode: {view.default_mode for view in v.values()} == {m},
                f"both workers in {mode}",
            )
        assert await shim.stop() == 0, shim.stderr[-5:]


async def _with_workers_held_at_their_start(tmp_path: Path) -> asyncio.subprocess.Process:
    """`shim serve --workers 2`, in a session of its own (as a terminal runs it), once both workers have
    started and are held there by a sitecustomize that sleeps, before any code of theirs runs."""
    (tmp_path / "sitecustomize.py").write_text(
        "import os, pathlib, sys, time\n"
        "if '--multiprocessing-fork' in sys.argv:\n"
        f"    pathlib.Path({str(tmp_path)!r}, f'worker-{{os.getpid()}}').write_text('')\n"
        "    time.sleep(30)\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    flags = ["--bank", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--dataplane", "python", "--workers", "2"]
    shim = await asyncio.create_subprocess_exec(
        *SERVE, *flags, cwd=tmp_path, env=env, start_new_session=True,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await until(lambda: len(list(tmp_path.glob("worker-*"))) == 2, "both workers started", 60)
    return shim


async def test_a_stop_before_the_workers_can_take_it_exits_0(tmp_path: Path) -> None:
    """SIGTERM to `shim serve --workers 2` while its workers have not yet set their handlers (held at their
    start by a sitecustomize that sleeps): the SIGTERM passed on ends them, and the shim exits 0, a stop
    asked for, its last line saying so. Before, it exited 1."""
    shim = await _with_workers_held_at_their_start(tmp_path)
    shim.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(shim.communicate(), 60)
    last = json.loads(err.decode().splitlines()[-1])
    assert (shim.returncode, last["event"], last["exit_codes"]) == (0, "stopped", [-15, -15]), err.decode()


async def test_a_ctrl_c_while_the_workers_start_stops_them_with_nothing_said(tmp_path: Path) -> None:
    """Ctrl-C in a terminal reaches the whole process group: the supervisor and its workers still starting
    (held at their start by a sitecustomize that sleeps). The workers leave the stop to the supervisor,
    which passes it on: exit 0, and no traceback. Before, each worker held printed KeyboardInterrupt's."""
    shim = await _with_workers_held_at_their_start(tmp_path)
    os.killpg(shim.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to every process of the group
    _, err = await asyncio.wait_for(shim.communicate(), 60)
    said = err.decode()
    assert "Traceback" not in said, said
    assert "KeyboardInterrupt" not in said, said
    last = json.loads(said.splitlines()[-1])
    assert (shim.returncode, last["event"], last["exit_codes"]) == (0, "stopped", [-15, -15]), said


async def test_a_ctrl_c_to_a_serving_shim_on_the_python_data_plane_says_nothing_of_its_comparison_worker(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Ctrl-C reaches the comparison worker process too: it leaves the stop to the shim, which drains and
    exits 0 with no traceback. Before, the worker printed KeyboardInterrupt's traceback every time."""
    bank, bk = ledgers
    flags = _shadow_args(bank, bk, tmp_path / "shim.db", "--dataplane", "python")
    async with shim_process(*flags, cwd=tmp_path, new_session=True) as shim:
        os.killpg(shim.proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to every process of the group
        assert await asyncio.wait_for(shim.proc.wait(), 60) == 0
    said = "".join(shim.stderr)
    assert "Traceback" not in said, said
    assert "KeyboardInterrupt" not in said, said
