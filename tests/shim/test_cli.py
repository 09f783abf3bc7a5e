"""The `shim serve` contract, run as a real process in front of a real sample Bank and BK.

A started shim prints one JSON "ready" line on stderr with the address it bound,
serves Bank's answers, writes one JSON line per differing call to the diff log,
and exits 0 after SIGTERM or SIGINT. A bad start exits 2 with one line on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from tests.backends import interop_server
from tests.helpers import run_shim, until

ROOT = Path(__file__).resolve().parents[2]
BANK_BINPB = ROOT / "sample_ledger" / "bank.binpb"
SERVE = [sys.executable, "-m", "shim", "serve"]
TIMEOUT = 60.0  # seconds one step of a shim process may take before the test fails (a loaded start)
CALL_TIMEOUT = 5.0


@dataclass
class ShimProcess:
    """A running `shim serve` whose stderr is read line by line."""

    proc: asyncio.subprocess.Process
    stderr: list[str] = field(default_factory=list)

    async def next_line(self) -> str:
        assert self.proc.stderr is not None
        raw = await asyncio.wait_for(self.proc.stderr.readline(), TIMEOUT)
        if not raw:
            status = await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            raise AssertionError(f"shim exited ({status}) before the next line; stderr so far: {self.stderr}")
        line = raw.decode()
        self.stderr.append(line)
        return line

    async def finish(self) -> int:
        """Wait (bounded) for the process to exit, reading the rest of stderr; its exit status."""
        assert self.proc.stderr is not None
        rest = await asyncio.wait_for(self.proc.stderr.read(), TIMEOUT)
        self.stderr.extend(rest.decode().splitlines(keepends=True))
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    def events(self) -> list[dict[str, Any]]:
        """Every stderr line, parsed: each must be one JSON object."""
        return [json.loads(line) for line in self.stderr]


@contextlib.asynccontextmanager
async def shim_serving(*args: str | Path) -> AsyncIterator[tuple[ShimProcess, dict[str, Any]]]:
    """Start `shim serve ARGS`, wait for its ready line; kill it on exit if it is still running."""
    with tempfile.TemporaryDirectory(prefix="shim-test-") as tmp:
        if "--store" not in args:  # never the default shim.db of the working directory
            args = (*args, "--store", str(Path(tmp) / "shim.db"))
        proc = await asyncio.create_subprocess_exec(
            *SERVE,
            *map(str, args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        running = ShimProcess(proc)
        try:
            ready = json.loads(await running.next_line())
            yield running, ready
        finally:
            if proc.returncode is None:
                proc.kill()
            await asyncio.wait_for(proc.communicate(), TIMEOUT)


def _shadow_flags(bank: RunningLedger, bk: RunningLedger, *more: str | Path) -> list[str | Path]:
    return ["--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--mode", "shadow", *more]


async def test_ready_line_names_the_bound_address(ledgers: tuple[RunningLedger, RunningLedger]) -> None:
    """With port 0 the first stderr line is one JSON "ready" event naming the bound port, mode, upstreams."""
    bank, bk = ledgers
    async with shim_serving(*_shadow_flags(bank, bk)) as (shim, ready):
        host, _, port = ready["listen"].rpartition(":")
        assert (ready["event"], host, ready["mode"], ready["bank"], ready["bk"]) == (
            "ready",
            "127.0.0.1",
            "shadow",
            bank.address,
            bk.address,
        )
        assert int(port) > 0
        # what the shim knows, and what it will serialize: with no descriptor set given, Bank's own
        # descriptors (the sample Bank serves reflection), and no key: its write methods go one at a time
        assert (ready["descriptor_source"], ready["methods_described"], ready["methods_keyed"]) == (
            "auto",
            14,
            0,
        )
        assert ready["serialized"].startswith("the calls of 7 write methods with no key (")
        assert ready["no_descriptors"] is None
        shim.proc.send_signal(signal.SIGTERM)
        assert await shim.finish() == 0
    assert [e["event"] for e in shim.events()].count("ready") == 1


async def test_without_descriptors_the_ready_line_says_every_call_is_serialized(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    bank, bk = ledgers
    async with shim_serving(*_shadow_flags(bank, bk, "--descriptor-source", "files")) as (shim, ready):
        assert (ready["methods_described"], ready["methods_keyed"]) == (0, 0)
        assert ready["serialized"] == "every call: without descriptors every method is a write with no key"
        shim.proc.send_signal(signal.SIGTERM)
        assert await shim.finish() == 0


async def test_client_gets_banks_answers_through_the_shim(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """In bank mode, a call through the shim reaches Bank and returns its answer."""
    bank = ledgers[0]
    async with (
        shim_serving("--listen", "127.0.0.1:0", "--bank", bank.address, "--mode", "bank") as (_, ready),
        grpc.aio.insecure_channel(ready["listen"]) as channel,
        grpc.aio.insecure_channel(bank.address) as direct,
    ):
        stub = pb_grpc.LedgerStub(channel)
        opened = await stub.OpenAccount(
            pb.OpenAccountRequest(account_id="A1", owner_name="Ada", initial_deposit="250"),
            timeout=CALL_TIMEOUT,
        )
        balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=CALL_TIMEOUT)
        on_bank = await pb_grpc.LedgerStub(direct).GetAccount(
            pb.GetAccountRequest(account_id="A1"), timeout=CALL_TIMEOUT
        )
    assert (opened.account_id, opened.owner_name) == ("A1", "Ada")
    assert (balance.account_id, float(balance.cash)) == ("A1", 250.0)
    assert on_bank == opened


async def test_planted_bug_lands_in_the_diff_log(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """In shadow mode, GetBalance of an unknown account (Bank NOT_FOUND, BK INVALID_ARGUMENT) gives the client
    Bank's answer and writes a JSON "mismatch" line with a status.code difference to the diff log."""
    bank, bk = ledgers
    diff_log = tmp_path / "diff.jsonl"
    flags = _shadow_flags(bank, bk, "--descriptor-set", BANK_BINPB, "--diff-log", diff_log)
    async with shim_serving(*flags) as (shim, ready), grpc.aio.insecure_channel(ready["listen"]) as channel:
        assert ready["methods_described"] > 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.LedgerStub(channel).GetBalance(
                pb.GetBalanceRequest(account_id="ghost"), timeout=CALL_TIMEOUT
            )
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        line = await _wait_for_line(
            diff_log, lambda entry: entry.get("method") == "/bank.v1.Ledger/GetBalance"
        )
        shim.proc.send_signal(signal.SIGTERM)
        assert await shim.finish() == 0
    assert line["verdict"] == "mismatch"
    assert (line["bank"]["status"], line["bk"]["status"]) == ("NOT_FOUND", "INVALID_ARGUMENT")
    assert {"path": "status.code", "kind": "status", "bank": "NOT_FOUND", "bk": "INVALID_ARGUMENT"} in line[
        "differences"
    ]


async def _wait_for_line(path: Path, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first JSON line of `path` that is `wanted`, polled for until a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while loop.time() < deadline:
        for entry in await asyncio.to_thread(_json_lines, path):
            if wanted(entry):
                return entry
        await asyncio.sleep(0.02)  # poll interval; the deadline above bounds the wait
    raise AssertionError(f"no wanted line in {path} after {TIMEOUT}s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
async def test_signal_stops_cleanly(ledgers: tuple[RunningLedger, RunningLedger], signum: int) -> None:
    """SIGTERM or SIGINT after serving a call: the shim logs "stopping" then "stopped" and exits 0."""
    bank, bk = ledgers
    async with shim_serving(*_shadow_flags(bank, bk)) as (shim, ready):
        async with grpc.aio.insecure_channel(ready["listen"]) as channel:
            await pb_grpc.LedgerStub(channel).OpenAccount(
                pb.OpenAccountRequest(account_id="A1", owner_name="Ada"), timeout=CALL_TIMEOUT
            )
        shim.proc.send_signal(signum)
        assert await shim.finish() == 0
    events = shim.events()
    assert [e["event"] for e in events] == ["ready", "stopping", "stopped"]
    assert events[-1]["calls"] == 1


async def test_flags_override_the_config_file(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Run with a config file and flags, the shim serves with the flags' values and the file's others."""
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    config.write_text(
        f'listen = "127.0.0.1:1"\nmode = "shadow"\n'
        f'[upstreams.bank]\ntarget = "{bank.address}"\n[upstreams.bk]\ntarget = "{bk.address}"\n',
        encoding="utf-8",
    )
    async with shim_serving("--config", config, "--listen", "127.0.0.1:0", "--mode", "bank") as (_, ready):
        assert (ready["mode"], ready["bank"], ready["bk"]) == ("bank", bank.address, bk.address)
        assert ready["listen"] != "127.0.0.1:1"
        async with grpc.aio.insecure_channel(ready["listen"]) as channel:
            answer = await pb_grpc.LedgerStub(channel).OpenAccount(
                pb.OpenAccountRequest(account_id="A1"), timeout=CALL_TIMEOUT
            )
    assert answer.account_id == "A1"


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of `path` so far (none while it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


# ---- failing to start -----------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


Argv = Callable[[Path, int], list[str]]

FAILURES: list[Any] = [
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--bogus"], "unrecognized arguments: --bogus", id="flag"
    ),
    pytest.param(lambda tmp, port: ["--bank", "127.0.0.1:1", "--mode", "bogus"], "--mode", id="mode"),
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--descriptor-source", "bogus"],
        "--descriptor-source",
        id="descriptor-source",
    ),
    pytest.param(
        lambda tmp, port: ["--config", str(tmp / "absent.toml")], "cannot read config", id="no-config"
    ),
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--rules", str(tmp / "absent.toml")],
        "cannot read rules file ",
        id="no-rules-file",
    ),
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--rules", str(_not_toml(tmp))],
        "rules file ",
        id="rules-not-toml",
    ),
    pytest.param(
        lambda tmp, port: ["--config", str(_invalid_config(tmp))], "upstreams.bank.retries", id="config"
    ),
    pytest.param(lambda tmp, port: ["--config", str(_not_toml(tmp))], "not valid TOML", id="not-toml"),
    pytest.param(lambda tmp, port: ["--listen", "127.0.0.1:0"], "--bank", id="no-bank"),
    pytest.param(
        lambda tmp, port: ["--listen", "127.0.0.1:0", "--bank", "127.0.0.1:7", "--bk", "localhost:7"],
        "upstreams.bk.target 'localhost:7' is Bank's own address ('127.0.0.1:7')",
        id="bk-at-bank",
    ),
    pytest.param(
        lambda tmp, port: ["--listen", f"127.0.0.1:{port}", "--bank", "127.0.0.1:1"],
        "cannot listen on 127.0.0.1:",
        id="busy-port",
    ),
    pytest.param(
        lambda tmp, port: ["--config", str(_unknown_method(tmp)), "--listen", f"127.0.0.1:{port}"],
        "unknown method (not in the descriptors)",
        id="config-fault-on-a-busy-port",  # the config's fault, not the port in use, on either data plane
    ),
    pytest.param(
        lambda tmp, port: [
            "--config",
            str(_unknown_method(tmp)),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        "unknown method (not in the descriptors)",
        id="config-fault-on-a-busy-port-workers",
    ),
    pytest.param(
        lambda tmp, port: [
            "--listen",
            "127.0.0.1:0",
            "--bank",
            "127.0.0.1:1",
            "--descriptor-set",
            str(tmp / "x"),
        ],
        "cannot read descriptor set",
        id="no-descriptor-set",
    ),
    pytest.param(
        lambda tmp, port: [
            "--listen",
            "127.0.0.1:0",
            "--bank",
            "127.0.0.1:1",
            "--descriptor-source",
            "reflection",
        ],
        "cannot reach Bank at 127.0.0.1:1 for gRPC reflection",
        id="reflection-bank-unreachable",
    ),
    pytest.param(
        lambda tmp, port: [
            "--listen",
            "127.0.0.1:0",
            "--bank",
            "127.0.0.1:1",
            "--diff-log",
            str(tmp / "no/such"),
        ],
        "cannot open diff log",
        id="diff-log-folder-missing",
    ),
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--descriptor-set", "/dev/urandom"],
        "cannot read descriptor set /dev/urandom: not a regular file",
        id="descriptor-set-a-device",
    ),
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--descriptor-set", str(_fifo(tmp))],
        "not a regular file",
        id="descriptor-set-a-fifo",
    ),
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--rules", str(_fifo(tmp))],
        "not a regular file",
        id="rules-a-fifo",
    ),
    pytest.param(lambda tmp, port: ["--config", str(_fifo(tmp))], "not a regular file", id="config-a-fifo"),
    pytest.param(
        lambda tmp, port: ["--config", str(_config(tmp, f'[tls]\ncert = "{_fifo(tmp)}"\nkey = "k.pem"\n'))],
        "tls.cert: cannot read",
        id="tls-cert-a-fifo",
    ),
    pytest.param(
        lambda tmp, port: ["--config", str(_config(tmp, "descriptor_sets = ['big.binpb']\n", big=True))],
        "larger than 64 MiB",
        id="descriptor-set-too-large",
    ),
    pytest.param(
        lambda tmp, port: ["--bank", "127.0.0.1:1", "--retain", "0s"], "--retain", id="retain-nothing"
    ),
    pytest.param(
        lambda tmp, port: ["--config", str(_config(tmp, "grace_period = inf\n"))],
        "grace_period",
        id="infinite-grace-period",
    ),
    pytest.param(
        lambda tmp, port: ["--config", str(_config(tmp, '[admin]\nlisten = "0.0.0.0:0"\n'))],
        "admin.listen: '0.0.0.0:0' is not a loopback address",
        id="admin-off-loopback",
    ),
]


def _fifo(folder: Path) -> Path:
    """A named pipe no one writes to: opening it to read would wait for ever."""
    path = folder / "pipe"
    if not path.exists():
        os.mkfifo(path)
    return path


def _config(folder: Path, text: str, big: bool = False) -> Path:
    """A config of `text` with Bank at 127.0.0.1:1; `big`: next to a sparse 65 MiB big.binpb."""
    if big:
        with open(folder / "big.binpb", "wb") as file:
            file.truncate(65 * 1024**2)
    path = folder / "footgun.toml"
    path.write_text(text + '[upstreams.bank]\ntarget = "127.0.0.1:1"\n', encoding="utf-8")
    return path


def _invalid_config(folder: Path) -> Path:
    path = folder / "invalid.toml"
    path.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\nretries = 3\n', encoding="utf-8")
    return path


def _unknown_method(folder: Path) -> Path:
    """A config whose fault shows only against its descriptors: a method they do not describe."""
    path = folder / "unknown-method.toml"
    path.write_text(
        f"descriptor_sets = [{json.dumps(str(BANK_BINPB))}]\n"
        '[upstreams.bank]\ntarget = "127.0.0.1:1"\n[upstreams.bk]\ntarget = "127.0.0.1:2"\n'
        '[methods."bank.v1.Ledger/NoSuchMethod"]\nkey = ["account_id"]\n',
        encoding="utf-8",
    )
    return path


def _not_toml(folder: Path) -> Path:
    path = folder / "broken.toml"
    path.write_text("listen = \n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("argv", "says"), FAILURES)
def test_failing_to_start_exits_2_with_one_line(
    tmp_path: Path, busy_port: int, argv: Argv, says: str
) -> None:
    """A bad flag, an unreadable or invalid config, or a busy port: exit status 2 and exactly one
    stderr line, starting "shim: error:" and saying what is wrong."""
    done = subprocess.run(
        [*SERVE, *argv(tmp_path, busy_port), "--store", str(tmp_path / "shim.db")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("shim: error: ")
    assert says in line
    assert done.stdout == ""


def test_a_config_error_with_redaction_and_no_key_is_still_one_line(tmp_path: Path) -> None:
    """Redaction with no key set runs on a random key, which the shim warns of; but a config that is
    wrong besides is the one line of its error, not that warning first."""
    config = _config(
        tmp_path,
        f"descriptor_sets = [{json.dumps(str(BANK_BINPB))}]\n"
        '[redact]\nfields = ["bank.v1.Account.owner_name"]\n'
        '[methods."bank.v1.Ledger/NoSuchMethod"]\nkey = ["account_id"]\n',
    )
    env = {k: v for k, v in os.environ.items() if k != "SHIM_REDACT_KEY"}
    done = run_shim("serve", "--config", config, "--store", tmp_path / "shim.db", timeout=TIMEOUT, env=env)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("shim: error: methods"), line
    assert "NoSuchMethod" in line


async def test_an_unreachable_upstream_is_warned_about_and_the_shim_serves_on() -> None:
    """With Bank down at start the shim still serves, warns once naming Bank, and answers UNAVAILABLE."""
    gone = await serve("bank")
    await gone.stop(None)  # its port is closed now
    async with shim_serving("--listen", "127.0.0.1:0", "--bank", gone.address, "--mode", "bank") as (
        shim,
        ready,
    ):
        # no descriptor set given, and Bank could not be asked for its own: the ready line says why
        assert gone.address in ready["no_descriptors"]
        assert ready["no_descriptors"].endswith("answers are compared byte for byte (docs/your-service.md)")
        warning = json.loads(await shim.next_line())  # the check gives up after a few seconds
        assert (warning["event"], warning["level"], warning["upstream"], warning["target"]) == (
            "upstream not reachable",
            "warning",
            "bank",
            gone.address,
        )
        async with grpc.aio.insecure_channel(ready["listen"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.LedgerStub(channel).GetBalance(
                    pb.GetBalanceRequest(account_id="A1"), timeout=CALL_TIMEOUT
                )
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        shim.proc.send_signal(signal.SIGTERM)
        assert await shim.finish() == 0
    assert [e["event"] for e in shim.events()] == ["ready", "upstream not reachable", "stopping", "stopped"]


async def test_ids_without_descriptors_say_bank_was_asked_by_reflection_and_served_none(
    tmp_path: Path,
) -> None:
    """[ids] with no descriptor set and a Bank that does not serve reflection: the one error line says
    that id translation needs descriptors, and that they were asked of Bank, which served none, and why."""
    bank = await interop_server()  # serves no gRPC reflection
    try:
        config = tmp_path / "ids.toml"
        config.write_text(
            f'[upstreams.bank]\ntarget = "{bank.address}"\n'
            '[ids.trade]\nminted = ["bank.v1.Trade.trade_id"]\n',
            encoding="utf-8",
        )
        proc = await asyncio.create_subprocess_exec(
            *SERVE,
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--store",
            str(tmp_path / "shim.db"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        await bank.stop()
    assert (proc.returncode, out) == (2, b"")
    [line] = err.decode().splitlines()
    assert line == (
        "shim: error: ids: id translation needs descriptors (--descriptor-set or descriptor_sets);"
        " none were given, so they were asked of Bank by gRPC reflection, and Bank served none:"
        f" Bank at {bank.address} does not serve gRPC reflection; give --descriptor-set FILE instead"
    )


async def test_a_custom_rule_is_imported_from_beside_the_config(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """`callable = "module:function"` finds a module in the config file's folder, with no PYTHONPATH and
    from another working directory, in the shim and in its comparison process. Before, the start failed:
    `cannot import beside_config_rules:same_clock: No module named 'beside_config_rules'`."""
    bank, bk = ledgers
    (tmp_path / "beside_config_rules.py").write_text(
        "from pathlib import Path\n\n\n"
        "def same_clock(bank, bk):\n"
        "    Path(__file__).with_name('rule called').write_text('yes')\n"
        "    return True\n",
        encoding="utf-8",
    )
    config = tmp_path / "shim.toml"
    config.write_text(
        f"descriptor_sets = [{json.dumps(str(BANK_BINPB))}]\n"
        '[[rules]]\npath = "bank.v1.Account.opened_at"\nrule = "custom"\n'
        'callable = "beside_config_rules:same_clock"\n',
        encoding="utf-8",
    )
    flags = _shadow_flags(bank, bk, "--config", config)
    async with shim_serving(*flags) as (shim, ready), grpc.aio.insecure_channel(ready["listen"]) as channel:
        await pb_grpc.LedgerStub(channel).OpenAccount(
            pb.OpenAccountRequest(account_id="A1", owner_name="Ada", initial_deposit="250"),
            timeout=CALL_TIMEOUT,
        )
        # the two clocks differ: the rule is asked, in the comparison process
        await until(lambda: (tmp_path / "rule called").exists(), "the custom rule called")
        shim.proc.send_signal(signal.SIGTERM)
        assert await shim.finish() == 0


def _shim(*argv: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_shim(*argv, cwd=cwd, timeout=TIMEOUT)


def test_resync_finds_the_store_of_a_config_and_lists_marks_resyncs_keys(tmp_path: Path) -> None:
    """`shim resync --config FILE` opens the config's store (a path relative to the file): it lists the
    keys out of step with since, method and reason; a key cannot be verified without [reconcile] reads, and
    --force resyncs it unverified."""
    from shim.store import OutOfStep, Store

    async def mark() -> None:
        store = Store.open(str(tmp_path / "state" / "shim.db"))
        await store.start()
        store.marks.put(
            [
                OutOfStep(
                    "A1", 1_795_000_000.0, "/bank.v1.Ledger/Deposit", "Bank applied it (OK), BK timed out"
                ),
                OutOfStep("B2", 1_795_000_100.0, "/bank.v1.Ledger/PostTrade", "the client cancelled it"),
            ]
        )
        await store.close()

    asyncio.run(mark())
    config = tmp_path / "shim.toml"
    config.write_text('[upstreams.bank]\ntarget = "127.0.0.1:1"\n[store]\nurl = "state/shim.db"\n')
    listed = _shim("resync", "--config", config)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "A1\tsince 2026-11-18T11:06:40Z\tbank.v1.Ledger/Deposit: Bank applied it (OK), BK timed out",
        "B2\tsince 2026-11-18T11:08:20Z\tbank.v1.Ledger/PostTrade: the client cancelled it",
    ]
    unverified = _shim("resync", "--config", config, "B2")  # no [reconcile]: nothing to verify B2 with
    assert unverified.returncode == 2
    assert "has no [reconcile] table" in unverified.stderr
    done = _shim("resync", "--config", config, "--force", "B2")
    assert (done.returncode, done.stdout) == (0, "B2: in step again (forced, not verified)\n")
    assert _shim("resync", "--store", tmp_path / "state" / "shim.db").stdout.startswith("A1\t")


def test_resync_with_a_store_it_cannot_open_exits_2_with_one_line(tmp_path: Path) -> None:
    """A store URL of an unknown kind, or a file under a file, is one error line and exit status 2."""
    (tmp_path / "file").write_text("")
    for store in ("mysql://somewhere/db", str(tmp_path / "file" / "shim.db")):
        done = _shim("resync", "--store", store, "--list")
        assert done.returncode == 2
        [line] = done.stderr.splitlines()
        assert line.startswith("shim: error: ")


async def test_a_second_signal_during_the_drain_exits_at_once() -> None:
    """SIGTERM starts the drain, which waits for the call in flight (grace 60 s); a second SIGTERM ends
    the process at once, with status 128 + 15."""
    from grpc import aio

    from tests.backends import scripted_server

    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(requests: Any, context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        _ = [r async for r in requests]
        arrived.set()
        await release.wait()
        return [b"late"]

    bank = await scripted_server(slow)
    try:
        config = Path(tempfile.mkdtemp(prefix="shim-test-")) / "shim.toml"
        config.write_text('grace_period = "60s"\n', encoding="utf-8")
        async with (
            shim_serving("--listen", "127.0.0.1:0", "--bank", bank.address, "--config", config) as (
                shim,
                ready,
            ),
            grpc.aio.insecure_channel(ready["listen"]) as channel,
        ):
            in_flight = asyncio.ensure_future(channel.unary_unary("/s.S/Slow")(b"x"))
            await asyncio.wait_for(arrived.wait(), TIMEOUT)
            shim.proc.send_signal(signal.SIGTERM)
            stopping = json.loads(await shim.next_line())
            assert stopping["event"] == "stopping"
            shim.proc.send_signal(signal.SIGTERM)
            status = await asyncio.wait_for(shim.proc.wait(), 10)  # well before the 60 s grace
            in_flight.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await in_flight
    finally:
        release.set()
        await bank.stop()
    assert status == 128 + signal.SIGTERM
