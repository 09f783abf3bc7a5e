"""`shim replay`: recordings made by the shim in `bank` mode in front of a real Bank, replayed on real BKs.

The sample ledger: the planted bugs are found and nothing benign is a mismatch; against the fixed BK
the gate passes, twice alike, every call accounted for; ids BK mints are translated; --key, --until and
--speed; a recording begun while Bank was running taints the keys; bad input is one line, exit 2, and
no store. The custody ledger (tests/services/custody) is the second service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import shutil
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import Comparison, Verdict
from sample_ledger._attribution import Attribution
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from sample_ledger.workload import run_workload
from shim.config import load_file
from shim.parts import load_registry
from shim.recording.format import RecordedCall, Recording
from shim.replay.bk import free_port
from shim.replay.run import Options, load_config, replay
from shim.replay.source import ReplayError
from shim.store import Store
from shim.testing import running_shim
from tests.helpers import refusing_address, shim_command, until
from tests.services import custody
from tests.services.custody.workload import run_workload as custody_workload

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "sample_ledger" / "shim.toml"
CALLS = 300


class Verdicts:
    """A sink: each call's verdict, by correlation id."""

    def __init__(self) -> None:
        self.by_id: dict[str, str] = {}
        self.comparisons: list[Comparison] = []
        self._lock = threading.Lock()

    def __call__(self, comparison: Comparison) -> None:
        with self._lock:
            self.by_id[comparison.exchange.correlation_id] = comparison.verdict.value
            self.comparisons.append(comparison)

    def of(self, verdict: Verdict) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict is verdict]


class _Naming:
    """Names each call "req-N" in `header`, as a client that sends request ids does (one interceptor
    per call kind: grpc.aio files an interceptor under the first kind it is)."""

    def __init__(self, header: str, numbers: Iterator[int]) -> None:
        self.header = header
        self.numbers = numbers

    def _named(self, details: Any) -> Any:
        named = (self.header, f"req-{next(self.numbers)}")
        return details._replace(metadata=aio.Metadata(*tuple(details.metadata or ()), named))


class _NamingUnary(_Naming, aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._named(details), request)


class _NamingServerStream(_Naming, aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._named(details), request)


class _NamingClientStream(_Naming, aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._named(details), requests)


class _NamingBidi(_Naming, aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._named(details), requests)


def request_ids(header: str) -> list[Any]:
    """Interceptors naming every call of a channel in `header` ("req-1", "req-2", ...)."""
    numbers = itertools.count(1)
    return [
        kind(header, numbers)
        for kind in (_NamingUnary, _NamingServerStream, _NamingClientStream, _NamingBidi)
    ]


async def _record(config: Path, bank: str, tmp: Path, drive: object, origin: str = "empty") -> Path:
    """The calls `drive(address)` makes through a shim in `bank` mode (no BK) in front of `bank`, with
    `config`'s settings, recorded by the shim."""
    registry = load_registry(load_config(config, bank, str(tmp / "unused.db")).descriptors.descriptor_sets)
    assert registry is not None
    settings = load_file(config)
    for name in ("bank", "bk", "mode"):
        settings.pop(name, None)
    path = tmp / f"recording-{time.monotonic_ns()}.jsonl"
    record = {"path": str(path), "origin": origin}
    async with running_shim(bank, registry=registry, record=record, **settings) as (shim, _):
        assert shim.config.bk is None
        await drive(shim.address)  # type: ignore[operator]
    return path


async def record_sample(tmp: Path, calls: int = CALLS, origin: str = "empty") -> Path:
    """A sample workload against a fresh sample Bank, recorded (each call named in the sample's
    correlation header)."""
    bank = await serve("bank")

    async def drive(address: str) -> None:
        async with aio.insecure_channel(address, interceptors=request_ids("x-request-id")) as channel:
            await run_workload(channel, calls, seed=3, concurrency=4)

    try:
        return await _record(SAMPLE, bank.address, tmp, drive, origin)
    finally:
        await bank.stop(None)


@pytest.fixture(scope="module")
def sample_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return asyncio.run(record_sample(tmp_path_factory.mktemp("rec")))


@pytest.fixture
async def bk() -> AsyncIterator[RunningLedger]:
    ledger = await serve("bk")
    yield ledger
    await ledger.stop(None)


@pytest.fixture
async def fixed_bk() -> AsyncIterator[RunningLedger]:
    ledger = await serve("bk", fixed=True)
    yield ledger
    await ledger.stop(None)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def _replay(recording: Path, store: Path, bk: str, **options: object) -> tuple[Verdicts, object]:
    verdicts = Verdicts()
    done = await replay(Options(recording, SAMPLE, str(store), bk=bk, **options), sinks=[verdicts])  # type: ignore[arg-type]
    return verdicts, done


async def test_the_planted_bugs_are_found_and_nothing_benign_is_a_mismatch(
    sample_recording: Path, bk: RunningLedger, tmp_path: Path
) -> None:
    attribution = Attribution()
    store = tmp_path / "out.db"
    done = await replay(Options(sample_recording, SAMPLE, str(store), bk=bk.address), sinks=[attribution])
    explained, unexplained, _ = attribution.attribute()
    assert unexplained == []
    assert explained[1] > 0  # fee rounding
    assert explained[2] > 0  # unknown account
    assert explained[3] > 0  # oversell
    assert done.summary.sent == done.summary.compared == len(_lines(sample_recording)) - 2
    assert _names(tmp_path) == ["out.db"]  # nothing beside it (no partial store)
    code, out, _ = await shim_command("gate", "--store", store, "--min-compared", "1")
    assert code == 1, out


async def test_against_the_fixed_bk_the_gate_passes_and_twice_gives_the_same_verdicts(
    sample_recording: Path, tmp_path: Path
) -> None:
    runs = []
    for n in range(2):
        ledger = await serve("bk", fixed=True)  # each replay from an empty BK
        try:
            verdicts, _ = await _replay(sample_recording, tmp_path / f"run{n}.db", ledger.address)
        finally:
            await ledger.stop(None)
        runs.append(verdicts.by_id)
    recorded = [json.loads(line)["correlation_id"] for line in _lines(sample_recording)[1:-1]]
    assert sorted(runs[0]) == sorted(recorded)  # every call accounted for, once
    assert runs[0] == runs[1]
    assert set(runs[0].values()) == {"match"}
    code, out, _ = await shim_command("gate", "--store", tmp_path / "run0.db", "--min-compared", "1")
    assert code == 0, out


async def test_ids_minted_by_bk_are_translated(
    sample_recording: Path, fixed_bk: RunningLedger, tmp_path: Path
) -> None:
    began = time.time()
    verdicts, _ = await _replay(sample_recording, tmp_path / "ids.db", fixed_bk.address)
    # the evidence is of the replay's time (what the gate's window looks at), not the recording's
    assert min(c.exchange.started_at for c in verdicts.comparisons) >= began
    trades = [c for c in verdicts.comparisons if c.method.endswith("/PostTrade") and c.exchange.primary.ok]
    cancels = [c for c in verdicts.comparisons if c.method.endswith("/CancelTrade") and c.exchange.primary.ok]
    assert trades
    assert cancels
    assert all(c.exchange.ids for c in trades)  # Bank's "T..." paired with BK's "trd_..."
    assert {c.verdict for c in cancels} == {Verdict.MATCH}  # sent to BK with BK's trade id


async def test_the_cli_with_a_started_bk_then_the_gate(sample_recording: Path, tmp_path: Path) -> None:
    store = tmp_path / "cli.db"
    command = f"{sys.executable} -m sample_ledger bk --fixed --listen 127.0.0.1:{{port}}"
    code, out, err = await shim_command(
        "replay", sample_recording, "--config", SAMPLE, "--bk-command", command, "--store", store
    )
    assert code == 0, err
    assert f"{CALLS} calls replayed" in out
    assert f"{CALLS} match" in out
    assert f"shim gate --store {store}" in out
    code, out, _ = await shim_command("gate", "--store", store, "--min-compared", "1")
    assert code == 0, out


async def test_key_replays_one_keys_history_and_until_stops_at_a_call(
    sample_recording: Path, fixed_bk: RunningLedger, tmp_path: Path
) -> None:
    calls = [json.loads(line) for line in _lines(sample_recording)[1:-1]]
    key = calls[0]["keys"][0]
    verdicts, _ = await _replay(sample_recording, tmp_path / "key.db", fixed_bk.address, key=key)
    mine = [c["correlation_id"] for c in calls if key in c["keys"] or (not c["keys"] and c["write"])]
    assert sorted(verdicts.by_id) == sorted(mine)
    assert set(verdicts.by_id.values()) == {"match"}  # the key's history alone is whole
    stop = calls[40]["correlation_id"]
    other = await serve("bk", fixed=True)
    try:
        verdicts, _ = await _replay(sample_recording, tmp_path / "until.db", other.address, until=stop)
    finally:
        await other.stop(None)
    assert sorted(verdicts.by_id) == sorted(c["correlation_id"] for c in calls[:41])


def _respaced(recording: Path, out: Path, gap: float, calls: int) -> Path:
    """The recording's first `calls` calls, `gap` seconds apart (a new end line, as its writer writes)."""
    from shim.recording.format import RecordingWriter

    source = Recording(recording)
    writer = RecordingWriter(out, source.header)
    for n, call in enumerate(source.calls()):
        if n == calls:
            break
        writer.add(dataclasses.replace(call, at=source.header.created_at + n * gap))
    return writer.end()


async def test_speed_keeps_the_recorded_timing_scaled(
    sample_recording: Path, fixed_bk: RunningLedger, tmp_path: Path
) -> None:
    spaced = _respaced(sample_recording, tmp_path / "spaced.jsonl", gap=0.1, calls=21)  # 2 s recorded
    started = time.monotonic()
    _, done = await _replay(spaced, tmp_path / "s1.db", fixed_bk.address, speed=2.0)
    assert time.monotonic() - started >= 1.0  # 2 s at twice the pace
    assert done.summary.sent == 21  # type: ignore[attr-defined]
    # without --speed the recorded gaps are not kept: 21 calls recorded 100 s apart (2,000 s in all) go as
    # fast as order allows, a small fraction of that however loaded the machine
    sparse = _respaced(sample_recording, tmp_path / "sparse.jsonl", gap=100.0, calls=21)
    fast = await serve("bk", fixed=True)
    try:
        started = time.monotonic()
        _, done = await _replay(sparse, tmp_path / "s2.db", fast.address)
    finally:
        await fast.stop(None)
    assert done.summary.sent == 21  # type: ignore[attr-defined]
    assert time.monotonic() - started < 100.0  # less than one recorded gap


GAP = 2.5  # seconds between a session's orders live: more than the sample's timestamp tolerance (2 s)


async def _spread_session(address: str) -> None:
    """An account opened, then a TradeSession of three orders, each sent GAP seconds after the answer
    to the one before, as a trader's come."""
    async with aio.insecure_channel(address, interceptors=request_ids("x-request-id")) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", currency="USD", initial_deposit="1000"))
        answered: asyncio.Queue[object] = asyncio.Queue()

        async def orders() -> AsyncIterator[pb.TradeSessionRequest]:
            for n in range(3):
                if n:
                    await answered.get()
                    await asyncio.sleep(GAP)  # the trader's pace, not a wait for anything
                order = pb.PostTradeRequest(
                    account_id="S1", symbol="ACME", side=pb.SIDE_BUY, quantity="1", price="10",
                    client_order_id=f"o{n}",
                )  # fmt: skip
                yield pb.TradeSessionRequest(order=order)

        async for event in stub.TradeSession(orders()):
            assert event.HasField("booked")
            answered.put_nowait(event)


def _booked_at(comparison: Comparison) -> list[float]:
    """When BK booked each trade of a session it answered, by its clock (seconds since the epoch)."""
    assert comparison.exchange.shadow is not None
    events = [pb.TradeSessionEvent.FromString(m) for m in comparison.exchange.shadow.messages]
    return [e.booked.booked_at.ToNanoseconds() / 1e9 for e in events]


async def test_a_session_spread_out_live_replays_with_no_false_time_differences(tmp_path: Path) -> None:
    """A session's orders came GAP seconds apart live, and Bank stamped each as it came; replayed, they
    reach BK sooner (as fast as order allows) or at the recorded pace scaled (--speed). Each answer's
    times are compared with Bank's moved on by how much later than live the request it followed went
    to BK: against a correct BK, every call matches. With --speed each order goes at its recorded time,
    scaled, not with the session's first or last call."""
    bank = await serve("bank")
    try:
        recording = await _record(SAMPLE, bank.address, tmp_path, _spread_session)
    finally:
        await bank.stop(None)
    session = next(c for c in Recording(recording).calls() if c.method.endswith("/TradeSession"))
    spread = session.request_times[2] - session.request_times[0]
    assert spread >= 2 * GAP  # spread out live, and recorded so
    for speed in (0.0, 2.0):
        ledger = await serve("bk", fixed=True)
        try:
            verdicts, _ = await _replay(recording, tmp_path / f"speed{speed}.db", ledger.address, speed=speed)
        finally:
            await ledger.stop(None)
        assert [c.verdict for c in verdicts.comparisons] == [Verdict.MATCH] * 2, [
            (c.method, c.real_differences) for c in verdicts.comparisons
        ]
        booked = _booked_at(next(c for c in verdicts.comparisons if c.method.endswith("/TradeSession")))
        if speed:
            assert booked[2] - booked[0] >= 0.75 * spread / speed, booked  # at the recorded pace, scaled


async def _open_then_read_later(address: str) -> None:
    """Two accounts opened, then, GAP seconds later, each read back (its opening time in the answer), the
    book listed (both opening times), and a third account opened and read at once."""
    async with aio.insecure_channel(address, interceptors=request_ids("x-request-id")) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for account in ("G1", "G2"):
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id=account, currency="USD", initial_deposit="10")
            )
        await asyncio.sleep(GAP)  # the clients' pace, not a wait for anything
        for account in ("G1", "G2"):
            await stub.GetAccount(pb.GetAccountRequest(account_id=account))
        await stub.ListAccounts(pb.ListAccountsRequest())
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="G3", currency="USD", initial_deposit="10"))
        await stub.GetAccount(pb.GetAccountRequest(account_id="G3"))


async def test_times_read_back_are_moved_on_by_the_offset_of_the_call_that_stamped_them(
    tmp_path: Path,
) -> None:
    """Accounts opened, and read back GAP seconds later live (more than the sample's 2 s tolerance);
    replayed as fast as order allows, the reads go to BK well under GAP after the openings. The opening
    times they read back were stamped by the openings, so they are moved on by the openings' offsets, not
    by the reads' own: against a correct BK, every call matches, keyed reads and the listing of every key
    alike. A BK whose clock runs 5 s ahead still shows, in the reads' times as in the openings'."""
    bank = await serve("bank")
    try:
        recording = await _record(SAMPLE, bank.address, tmp_path, _open_then_read_later)
    finally:
        await bank.stop(None)
    found = {}
    for ahead in (0.0, 5.0):
        ledger = await serve("bk", fixed=True)
        book = ledger.servicer.book
        book.clock = lambda now=book.clock, ahead=ahead: now() + timedelta(seconds=ahead)  # type: ignore[misc]
        try:
            verdicts, _ = await _replay(recording, tmp_path / f"ahead{ahead}.db", ledger.address)
        finally:
            await ledger.stop(None)
        found[ahead] = sorted(
            (c.exchange.correlation_id, c.method.rsplit("/", 1)[-1], c.verdict, _timed(c))
            for c in verdicts.comparisons
        )
    calls = [(correlation, method) for correlation, method, _, _ in found[0.0]]
    assert sorted(m for _, m in calls) == ["GetAccount"] * 3 + ["ListAccounts"] + ["OpenAccount"] * 3
    assert {(m, v) for _, m, v, _ in found[0.0]} == {
        ("OpenAccount", Verdict.MATCH), ("GetAccount", Verdict.MATCH), ("ListAccounts", Verdict.MATCH)
    }, found[0.0]  # fmt: skip
    # BK's clock 5 s ahead: every time it stamped is a difference, the opening times read back included
    assert [(m, v, t) for _, m, v, t in found[5.0]] == [(m, Verdict.MISMATCH, True) for _, m in calls], found[
        5.0
    ]


def _timed(comparison: Comparison) -> bool:
    """Whether every real difference of `comparison` is a time (the sample's `_at` and `as_of` fields)."""
    paths = [d.path for d in comparison.real_differences]
    return bool(paths) and all(p.endswith(("_at", "as_of")) for p in paths)


async def test_a_recording_begun_while_bank_ran_taints_every_key_unless_seeded(
    bk: RunningLedger, tmp_path: Path
) -> None:
    running = await record_sample(tmp_path, origin="running")
    verdicts, done = await _replay(running, tmp_path / "t.db", bk.address)
    assert verdicts.of(Verdict.MISMATCH) == []
    assert verdicts.of(Verdict.TAINTED)
    assert "every key's state is unknown" in done.summary.tainted_from_start  # type: ignore[attr-defined]
    seeded = await serve("bk")
    try:
        verdicts, _ = await _replay(running, tmp_path / "seeded.db", seeded.address, seed="true")
    finally:
        await seeded.stop(None)
    assert verdicts.of(Verdict.MISMATCH)  # seeded: the state is known, the planted bugs show
    failing = await shim_command(
        "replay",
        running,
        "--config",
        SAMPLE,
        "--bk",
        bk.address,
        "--store",
        tmp_path / "f.db",
        "--seed",
        "false",
    )
    _one_line_error(failing, "--seed exited with status 1", tmp_path / "f.db")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _spoilt(recording: Path, tmp: Path) -> tuple[Path, Path]:
    """The recording cut short (no end line), and with one call changed (its checksum no longer holds)."""
    lines = recording.read_bytes().splitlines(keepends=True)
    cut = tmp / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:-1]))
    corrupt = tmp / "corrupt.jsonl"
    changed = lines[5].replace(b'"code":0', b'"code":5', 1)
    assert changed != lines[5]
    corrupt.write_bytes(b"".join([*lines[:5], changed, *lines[6:]]))
    return cut, corrupt


def _lost(recording: Path, tmp: Path, lost: object) -> Path:
    """The recording with its end line's `lost` changed (the end line is not under the checksum)."""
    lines = recording.read_bytes().splitlines(keepends=True)
    end = json.loads(lines[-1])
    end["end"]["lost"] = lost
    spoilt = tmp / "lost.jsonl"
    spoilt.write_bytes(b"".join([*lines[:-1], json.dumps(end).encode() + b"\n"]))
    return spoilt


def _one_line_error(result: tuple[int | None, str, str], says: str, store: Path) -> None:
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("shim: error: "), err
    assert says in lines[0], err
    assert not list(store.parent.glob(store.name + "*"))  # no store, not even a partial one


async def test_bad_input_is_one_line_exit_2_and_no_store(
    sample_recording: Path, bk: RunningLedger, tmp_path: Path
) -> None:
    cut, corrupt = _spoilt(sample_recording, tmp_path)
    lost = _lost(sample_recording, tmp_path, "many")
    custody_config = _custody_config(tmp_path)
    with refusing_address() as down:  # nothing answers there, for as long as the replays run
        rec, to = sample_recording, ("--bk", bk.address)
        cases: list[tuple[tuple[str | Path, ...], str]] = [
            ((cut, *to), "truncated after"),
            ((corrupt, *to), "corrupt"),
            *(  # slower than 0.001: the replay could never finish
                ((rec, *to, "--speed", speed), f"--speed: {speed!r} is not a speed from 0.001 up")
                for speed in ("5e-324", "0.0009", "0", "nan")
            ),
            ((lost, *to), 'end line is malformed: its lost is "many"'),
            # (its --config comes last, and wins)
            ((rec, *to, "--config", custody_config), "recorded from another service: /bank.v1.Ledger/"),
            ((rec, "--bk", down), "is not reachable (no connection within 5s)"),
            ((rec, *to, "--until", "nope"), "no call of"),
            ((rec, *to, "--key", "NOPE"), "--key 'NOPE': no call of"),  # it wrote an empty store, exit 0
        ]
        stores = [tmp_path / f"bad{n}.db" for n in range(len(cases))]
        results = await asyncio.gather(  # each its own process and store: at once
            *(
                shim_command("replay", "--config", SAMPLE, *args, "--store", store)
                for (args, _), store in zip(cases, stores, strict=True)
            )
        )
    for result, (_, says), store in zip(results, cases, stores, strict=True):
        _one_line_error(result, says, store)
    store = tmp_path / "bad.db"
    with pytest.raises(ReplayError, match=r"speed 1e-09 is not a speed from 0\.001 up"):
        await replay(Options(sample_recording, SAMPLE, str(store), bk=bk.address, speed=1e-9))
    assert not store.exists()
    code, _, err = await shim_command(
        "replay", "--config", SAMPLE, "--store", store, cut, "--bk", bk.address, "--truncated"
    )
    assert code == 0, err  # accepted when asked for: its calls up to where it stops


def _untouched(path: Path) -> tuple[bytes, list[str]]:
    """A file's bytes, and what is in its folder: the same after a replay refused it, if left alone."""
    return path.read_bytes(), _names(path.parent)


async def test_a_store_that_holds_a_recording_or_another_database_is_refused_untouched(
    fixed_bk: RunningLedger, sample_recording: Path, tmp_path: Path
) -> None:
    """--store never replaces a file holding anything: a store holding a recording (and nothing compared),
    or another application's SQLite database, is refused before anything is sent, and left as it was
    (read without a migration, nor a write of any kind, beside it included). An empty shim store is
    replaced by the replay's."""
    bank = await serve("bank")
    live = tmp_path / "live" / "live.db"
    live.parent.mkdir()
    registry = load_registry(load_config(SAMPLE, bank.address, str(live)).descriptors.descriptor_sets)
    settings = load_file(SAMPLE)
    for name in ("bank", "bk", "mode", "store"):
        settings.pop(name, None)
    try:
        recording_into = {"into": "store", "id": "prod-1"}
        async with (
            running_shim(
                bank.address, registry=registry, record=recording_into, store={"url": str(live)}, **settings
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            await run_workload(channel, 10, seed=3, concurrency=2)
    finally:
        await bank.stop(None)
    other = tmp_path / "other" / "notes.db"
    other.parent.mkdir()
    with contextlib.closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('not the shim')")
    for store, says in (
        (live, f"--store {live}: it already holds recordings; give a new file"),
        (other, f"--store {other}: not a shim store (a SQLite database of other tables: notes)"),
    ):
        before = _untouched(store)
        code, _, err = await shim_command(
            "replay", sample_recording, "--config", SAMPLE, "--bk", fixed_bk.address, "--store", store
        )
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"shim: error: {says}"), err
        assert _untouched(store) == before
    assert fixed_bk.servicer.book.accounts == {}  # type: ignore[union-attr]  # nothing was sent
    code, listed, err = await shim_command("record", "list", "--store", live)
    assert code == 0, err
    assert "prod-1" in listed
    empty = tmp_path / "empty.db"
    made = Store.open(str(empty))
    await made.start()
    await made.close()
    until = json.loads(_lines(sample_recording)[1])["correlation_id"]
    code, _, err = await shim_command(
        "replay", sample_recording, "--config", SAMPLE, "--bk", fixed_bk.address, "--store", empty,
        "--until", until,
    )  # fmt: skip
    assert code == 0, err
    assert _names(tmp_path) == ["empty.db", "live", "other"]  # replaced by the replay's store
    code, out, _ = await shim_command("gate", "--store", empty, "--min-compared", "1")
    assert code == 0, out


async def test_a_bk_command_or_seed_that_dies_says_how(
    sample_recording: Path, bk: RunningLedger, tmp_path: Path
) -> None:
    """A command that exits says its status; one killed by a signal names the signal, never a negative
    status."""
    store = tmp_path / "dies.db"
    replay_ = ("replay", sample_recording, "--config", SAMPLE, "--store", store)
    for command, says in (
        ("sh -c 'exit 3'", "--bk-command exited with status 3 before serving"),
        ("sh -c 'kill -KILL $$'", "--bk-command was killed by SIGKILL before serving"),
    ):
        _one_line_error(await shim_command(*replay_, "--bk-command", command), says, store)
    _one_line_error(
        await shim_command(*replay_, "--bk", bk.address, "--seed", "kill -TERM $$"),
        "--seed was killed by SIGTERM: BK's starting state is not known",
        store,
    )


async def test_bk_going_down_mid_run_stops_the_replay_with_no_store(
    sample_recording: Path, tmp_path: Path
) -> None:
    spaced = _respaced(sample_recording, tmp_path / "slow.jsonl", gap=0.05, calls=200)  # 10 s recorded
    port = free_port()
    ledger = await serve("bk", f"127.0.0.1:{port}")
    store = tmp_path / "mid.db"
    replaying = asyncio.ensure_future(
        shim_command(
            "replay", spaced, "--config", SAMPLE, "--bk", ledger.address, "--store", store, "--speed", "1"
        )
    )
    await until(lambda: len(ledger.servicer.book.accounts) >= 3, "BK got some of the replay")  # type: ignore[union-attr]
    await ledger.stop(None)
    _one_line_error(await replaying, "BK stopped answering mid-run", store)


# -- the second service: custody (tests/services/custody) -------------------------------------------------


def _custody_config(tmp: Path) -> Path:
    """custody's shim.toml copied next to the descriptor set it names."""
    (tmp / "custody.binpb").write_bytes(custody.DESCRIPTOR_SET)
    config = tmp / "custody.toml"
    shutil.copyfile(Path(custody.__file__).parent / "shim.toml", config)
    return config


async def _custody_recording(tmp: Path, config: Path) -> Path:
    bank = await custody.serve("bank")

    async def drive(address: str) -> None:
        await custody_workload(address, seed=3, clients=3, calls=30)

    try:
        return await _record(config, bank.address, tmp, drive)
    finally:
        await bank.stop()


async def test_custody_replayed_finds_its_bugs_and_with_them_off_passes_the_gate_twice_alike(
    tmp_path: Path,
) -> None:
    CUSTODY = _custody_config(tmp_path)
    recording = await _custody_recording(tmp_path, CUSTODY)
    buggy = await custody.serve("bk")
    try:
        done = await replay(Options(recording, CUSTODY, str(tmp_path / "bugs.db"), bk=buggy.address))
    finally:
        await buggy.stop()
    assert done.summary.by_verdict()["mismatch"] > 0
    runs = []
    for n in range(2):
        fixed = await custody.serve("bk", bugs=())
        try:
            verdicts = Verdicts()
            store = tmp_path / f"fixed{n}.db"
            await replay(Options(recording, CUSTODY, str(store), bk=fixed.address), sinks=[verdicts])
        finally:
            await fixed.stop()
        runs.append(Counter((c.method, c.verdict.value) for c in verdicts.comparisons))
        # ids: BK minted its own account and movement ids; calls naming Bank's reached BK as BK's
        assert {c.verdict for c in verdicts.comparisons} == {Verdict.MATCH}
        assert sum(runs[-1].values()) == len(_lines(recording)) - 2
    assert runs[0] == runs[1]
    code, out, _ = await shim_command("gate", "--store", tmp_path / "fixed0.db", "--config", CUSTODY)
    assert code == 0, out
    _one_line_error(
        await shim_command(
            "replay", recording, "--config", SAMPLE, "--store", tmp_path / "x.db", "--bk", "127.0.0.1:1"
        ),
        "recorded from another service: /custody.v1.Custody/",
        tmp_path / "x.db",
    )


async def test_key_takes_the_calls_naming_ids_and_aliases_minted_on_the_key(tmp_path: Path) -> None:
    """A recording made with no BK keys a call by its `key` paths alone: a Reverse names only a
    movement, a GetAccountByRef only a client's reference. --key learns, from Bank's recorded answers,
    the movements and references minted on the key, and takes the calls naming them."""
    config = _custody_config(tmp_path)
    recording = await _custody_recording(tmp_path, config)
    registry = load_registry([tmp_path / "custody.binpb"])
    assert registry is not None

    def decoded(call: RecordedCall, answer: bool) -> object:
        info = registry.method(call.method)
        assert info is not None
        cls = registry.message_class(info.output_type if answer else info.input_type)
        return cls.FromString(call.responses[0] if answer else call.requests[0])

    calls = list(Recording(recording).calls())
    movements: dict[str, tuple[str, str]] = {}
    refs: dict[str, str] = {}
    named: list[tuple[RecordedCall, tuple[str, ...]]] = []  # calls naming a known movement or reference
    for call in calls:
        name = call.method.rsplit("/", 1)[1]
        if name == "Transfer" and call.code == 0:
            moved: Any = decoded(call, answer=True)
            movements[moved.movement_id] = (moved.from_account, moved.to_account)
        elif name == "OpenAccount" and call.code == 0:
            account: Any = decoded(call, answer=True)
            refs[account.client_ref] = account.account_id
        elif name == "Reverse":
            movement = movements.get(decoded(call, answer=False).movement_id)  # type: ignore[attr-defined]
            if movement:
                named.append((call, movement))
        elif name == "GetAccountByRef":
            owner = refs.get(decoded(call, answer=False).client_ref)  # type: ignore[attr-defined]
            if owner:
                named.append((call, (owner,)))
    reverse = next(c for c in named if c[0].method.endswith("/Reverse"))
    key = reverse[1][0]
    assert key not in reverse[0].keys  # recorded with no key: it names a movement only

    def call_of(method: str, requests: tuple[bytes, ...]) -> tuple[str, tuple[bytes, ...]]:
        return method, requests  # custody's clients send no request id: a call is its method and messages

    theirs = Counter(call_of(c.method, c.requests) for c, owners in named if key in owners)
    assert any(c.method.endswith("/GetAccountByRef") for c, owners in named if key in owners)
    fixed = await custody.serve("bk", bugs=())
    try:
        verdicts = Verdicts()
        await replay(
            Options(recording, config, str(tmp_path / "k.db"), bk=fixed.address, key=key), [verdicts]
        )
    finally:
        await fixed.stop()
    mine = Counter(
        call_of(c.method, c.requests) for c in calls if key in c.keys or (not c.keys and c.is_write)
    )
    assert theirs - mine  # calls the recorded keys alone leave out (reads by reference)
    assert Counter(call_of(c.method, c.exchange.requests) for c in verdicts.comparisons) == mine | theirs
