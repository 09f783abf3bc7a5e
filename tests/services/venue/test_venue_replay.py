"""Replaying the venue's sessions (a second service, bidi streams) as they came: recorded in `bank` mode
with no BK, a session's orders keep their places among the account's other calls, so a read made between
two orders of a session reaches BK in the state Bank was in when it answered (recorded through the Python
data plane)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import Comparison, Verdict
from shim.config import load_file
from shim.recording.format import Recording, RecordingWriter
from shim.recording.recorder import key_sampled
from shim.replay.driver import BK_ANSWERED
from shim.replay.run import Options, replay
from shim.replay.source import ReplayError
from shim.testing import running_shim
from tests.services.venue import DESCRIPTOR_SET, REGISTRY
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, message_class, new
from tests.services.venue.server import Served, serve
from tests.shim.test_replay_recorded import cut_short, killed

HERE = Path(__file__).parent


class _Comparisons:
    def __init__(self) -> None:
        self.seen: list[Comparison] = []
        self._lock = threading.Lock()

    def __call__(self, comparison: Comparison) -> None:
        with self._lock:
            self.seen.append(comparison)


def _order(quantity: int) -> Any:
    return new("NewOrder", symbol="XYZ", side=BUY, quantity=quantity, limit_price="10.00")


async def _reads_between_orders(channel: aio.Channel) -> list[Any]:
    """A session of two orders on R1, with R1 read after each, before the session ends; the reads."""
    client = VenueClient(channel)
    await client.open_account("R1", "100000.00")
    reads = []
    async with client.session() as session:
        for quantity in (10, 20):
            await session.send(new("TradeRequest", account="R1", new=_order(quantity)))
            reads.append(await client.get_account("R1"))
    return reads


async def _recorded(
    bank: Served, tmp_path: Path, drive: Callable[[aio.Channel], Awaitable[None]], **record: Any
) -> tuple[Path, Path]:
    """The venue's shim.toml copied into `tmp_path` (with its descriptor set), and the calls `drive` made
    through a shim in `bank` mode (no BK) in front of `bank`, recorded through the Python data plane
    (`record`: more [record] settings)."""
    config = tmp_path / "shim.toml"
    shutil.copyfile(HERE / "shim.toml", config)
    (tmp_path / "venue.binpb").write_bytes(DESCRIPTOR_SET)
    settings = load_file(config)
    for upstream in ("bank", "bk", "mode"):
        settings.pop(upstream)
    path = tmp_path / "venue.jsonl"
    async with (
        running_shim(
            bank.address,
            registry=REGISTRY,
            dataplane="python",
            record={"path": str(path), "origin": "empty", **record},
            **settings,
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        await drive(channel)
    return config, path


async def test_a_read_between_a_sessions_orders_replays_against_the_state_it_saw(
    bank: Served, tmp_path: Path
) -> None:
    """Recorded through the Python data plane, which sees a session's messages as they pass (Envoy's
    copies trail them: through Envoy a session is recorded, and replayed, whole at its start)."""
    reads: list[Any] = []

    async def drive(channel: aio.Channel) -> None:
        reads.extend(await _reads_between_orders(channel))

    config, path = await _recorded(bank, tmp_path, drive)
    assert reads[0].cash != reads[1].cash  # the second order moved R1's cash: the reads tell them apart
    calls = list(Recording(path).calls())
    assert [c.method.rsplit("/", 1)[1] for c in calls] == ["OpenAccount", "Trade", "GetAccount", "GetAccount"]
    session = calls[1]
    # its second order came after the first read arrived, and before the second
    assert calls[2].at < session.at + session.request_times[1] < calls[3].at

    bk = await serve("bk")
    comparisons = _Comparisons()
    try:
        done = await replay(Options(path, config, str(tmp_path / "out.db"), bk=bk.address), [comparisons])
    finally:
        await bk.stop()
    assert done.summary.sent == done.summary.compared == 4
    # fed all at once, the session's second order reached BK before the first read: a mismatch
    assert [c.verdict for c in comparisons.seen if c.method.endswith("/GetAccount")] == [Verdict.MATCH] * 2
    assert {c.verdict for c in comparisons.seen} == {Verdict.MATCH}


GAP = 1.5  # seconds between a session's orders live: more than acked_at's tolerance (1 s, shim.toml)


async def _spread_session(channel: aio.Channel) -> None:
    """A session of three orders on S1, each sent GAP seconds after the ack of the one before."""
    client = VenueClient(channel)
    await client.open_account("S1", "100000.00")
    async with client.session() as session:
        for n, quantity in enumerate((10, 20, 30)):
            if n:
                await asyncio.sleep(GAP)  # the trader's pace, not a wait for anything
            await session.send(new("TradeRequest", account="S1", new=_order(quantity)))


async def test_a_session_spread_out_live_replays_with_no_false_time_differences(tmp_path: Path) -> None:
    """Each side stamps a session's acks as it handles their requests (`acked_at`). Replayed, the orders
    reach BK sooner than they came live (or at their recorded pace scaled, with --speed): each ack's
    time is compared with Bank's moved on by how much later than live its own request went, so a correct
    BK matches; and with --speed the orders go at their recorded times, scaled."""
    bank = await serve("bank", stamped=True)
    try:
        config, path = await _recorded(bank, tmp_path, _spread_session)
    finally:
        await bank.stop()
    session = next(c for c in Recording(path).calls() if c.method.endswith("/Trade"))
    spread = session.request_times[2] - session.request_times[0]
    assert spread >= 2 * GAP
    for speed in (0.0, 2.0):
        bk = await serve("bk", stamped=True)
        comparisons = _Comparisons()
        try:
            options = Options(path, config, str(tmp_path / f"speed{speed}.db"), bk=bk.address, speed=speed)
            await replay(options, [comparisons])
        finally:
            await bk.stop()
        assert [c.verdict for c in comparisons.seen] == [Verdict.MATCH] * 2, [
            (c.method, c.real_differences) for c in comparisons.seen
        ]
        trade = next(c for c in comparisons.seen if c.method.endswith("/Trade"))
        assert trade.exchange.shadow is not None
        acks = [message_class("TradeAck").FromString(m) for m in trade.exchange.shadow.messages]
        assert len(acks) == 3
        acked = [ack.acked_at.ToNanoseconds() / 1e9 for ack in acks]
        if speed:
            assert acked[2] - acked[0] >= 0.75 * spread / speed, acked  # at the recorded pace, scaled


async def _account_and_reads(channel: aio.Channel) -> None:
    """R1 opened, a session of one order on it, and R1 read."""
    client = VenueClient(channel)
    await client.open_account("R1", "100000.00")
    async with client.session() as session:
        await session.send(new("TradeRequest", account="R1", new=_order(10)))
    await client.get_account("R1")


async def test_truncated_reads_the_partial_file_of_a_recording_never_ended(
    bank: Served, tmp_path: Path
) -> None:
    """Only NAME.partial is there (its shim was killed): replaying NAME says to read it with --truncated,
    and with it reads NAME.partial."""
    config, path = await _recorded(bank, tmp_path, _account_and_reads)
    named = tmp_path / "killed.jsonl"
    partial = cut_short(path, named, calls=3)
    bk = await serve("bk")
    comparisons = _Comparisons()
    try:
        with pytest.raises(ReplayError, match=r"not ended: only killed\.jsonl\.partial .* with --truncated"):
            await replay(Options(named, config, str(tmp_path / "refused.db"), bk=bk.address))
        options = Options(named, config, str(tmp_path / "read.db"), bk=bk.address, truncated=True)
        done = await replay(options, [comparisons])
    finally:
        await bk.stop()
    assert done.recording == partial
    assert done.summary.sent == 3
    assert {c.verdict for c in comparisons.seen} == {Verdict.MATCH}


async def test_a_call_of_a_method_the_venue_lacks_is_refused_before_anything_is_sent(
    bank: Served, tmp_path: Path
) -> None:
    """A header listing the venue's methods, with a call of another service's method among them: the call
    is refused, naming its method, before BK gets anything (it was sent, and compared)."""
    config, path = await _recorded(bank, tmp_path, _account_and_reads)
    source = Recording(path)
    calls = list(source.calls())
    stray = dataclasses.replace(calls[1], seq=1, method="/bank.v1.Ledger/GetBalance")
    mixed = tmp_path / "mixed.jsonl"
    writer = RecordingWriter(mixed, source.header)
    for call in (calls[0], stray, *(dataclasses.replace(c, seq=c.seq + 1) for c in calls[1:])):
        writer.add(call)
    writer.end()
    assert "/bank.v1.Ledger/GetBalance" not in source.header.methods
    bk = await serve("bk")
    try:
        with pytest.raises(ReplayError) as refused:
            await replay(Options(mixed, config, str(tmp_path / "mixed.db"), bk=bk.address))
        assert bk.book.order_ids == []  # nothing was sent
    finally:
        await bk.stop()
    assert str(refused.value) == (
        f"{mixed}: recorded from another service: /bank.v1.Ledger/GetBalance is not in the config's"
        " descriptors"
    )
    assert _names(tmp_path, "mixed.db*") == []


def _names(folder: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


async def test_calls_answered_by_bk_when_recorded_go_to_bk_but_are_skipped(
    bank: Served, tmp_path: Path
) -> None:
    """A session and a read recorded after a switch to bk-primary hold BK's answers (`answered_by`). They
    go to BK, whose book goes on as live (the session's order is placed), but each is `skipped`, saying
    why: compared with BK's own answers they matched, whatever BK did."""
    config, path = await _recorded(bank, tmp_path, _account_and_reads)
    source = Recording(path)
    switched = tmp_path / "switched.jsonl"
    writer = RecordingWriter(switched, source.header)
    for call in source.calls():
        writer.add(call if call.seq == 0 else dataclasses.replace(call, answered_by="bk"))
    writer.end()
    bk = await serve("bk")
    comparisons = _Comparisons()
    try:
        done = await replay(Options(switched, config, str(tmp_path / "out.db"), bk=bk.address), [comparisons])
        placed = len(bk.book.order_ids)
    finally:
        await bk.stop()
    assert placed == 1  # the session's order reached BK
    got = sorted((c.method.rsplit("/", 1)[1], c.verdict, c.reason) for c in comparisons.seen)
    assert got == [
        ("GetAccount", Verdict.SKIPPED, BK_ANSWERED),
        ("OpenAccount", Verdict.MATCH, ""),
        ("Trade", Verdict.SKIPPED, BK_ANSWERED),
    ]
    assert done.summary.answered_by_bk == 2


async def _a_session_on_two_accounts(channel: aio.Channel) -> None:
    """V1 and V2 opened, a session of an order on V1 then one on V2, then V2 read."""
    client = VenueClient(channel)
    for account in ("V1", "V2"):
        await client.open_account(account, "100000.00")
    async with client.session() as session:
        for account, quantity in (("V1", 10), ("V2", 20)):
            await session.send(new("TradeRequest", account=account, new=_order(quantity)))
    await client.get_account("V2")


async def test_a_session_is_recorded_on_every_account_its_messages_name(bank: Served, tmp_path: Path) -> None:
    """The session's keys are both accounts, so `--key V2` replays it and V2's read after it matches (it
    was a mismatch: BK never had V2's order)."""
    config, path = await _recorded(bank, tmp_path, _a_session_on_two_accounts)
    session = next(c for c in Recording(path).calls() if c.method.endswith("/Trade"))
    assert session.keys == ("V1", "V2")
    bk = await serve("bk")
    comparisons = _Comparisons()
    try:
        await replay(Options(path, config, str(tmp_path / "v2.db"), bk=bk.address, key="V2"), [comparisons])
    finally:
        await bk.stop()
    got = {c.method.rsplit("/", 1)[1]: c.verdict for c in comparisons.seen}
    assert "Trade" in got
    assert got["GetAccount"] is Verdict.MATCH


async def test_sampling_keeps_a_session_on_a_sampled_account_it_names_after_its_first(
    bank: Served, tmp_path: Path
) -> None:
    """Under `record.sample`, a session whose first order is on an account not sampled (V1) and whose second
    is on one sampled (V2) is recorded, V1 under `unsampled` (it was left out)."""
    assert not key_sampled("V1", 0.5)
    assert key_sampled("V2", 0.5)
    _, path = await _recorded(bank, tmp_path, _a_session_on_two_accounts, sample=0.5)
    got = [(c.method.rsplit("/", 1)[1], c.keys, c.unsampled) for c in Recording(path).calls()]
    assert got == [
        ("OpenAccount", ("V2",), ()),
        ("Trade", ("V1", "V2"), ("V1",)),
        ("GetAccount", ("V2",), ()),
    ]


async def _a_batch_then_a_read(channel: aio.Channel) -> None:
    """R1 opened, a batch of 20 orders on it (larger than the recording's max_call_bytes: lost), R1 read."""
    client = VenueClient(channel)
    await client.open_account("R1", "100000.00")
    await client.submit_batch(new("NewOrderRequest", account="R1", order=_order(1)) for _ in range(20))
    await client.get_account("R1")


async def test_a_recording_cut_short_knows_the_calls_lost_before_the_cut(
    bank: Served, tmp_path: Path
) -> None:
    """A batch too large to record is lost; each call after it says so (`lost`), so the recording cut
    short (only NAME.partial, no end line) still knows, and the read after the batch, replayed with
    --truncated, is tainted, not a mismatch."""
    config, path = await _recorded(bank, tmp_path, _a_batch_then_a_read, max_call_bytes=400)
    partial = killed(path)
    bk = await serve("bk")
    comparisons = _Comparisons()
    try:
        options = Options(path, config, str(tmp_path / "cut.db"), bk=bk.address, truncated=True)
        done = await replay(options, [comparisons])
    finally:
        await bk.stop()
    assert done.recording == partial
    got = {c.method.rsplit("/", 1)[1]: c.verdict for c in comparisons.seen}
    assert got == {"OpenAccount": Verdict.MATCH, "GetAccount": Verdict.TAINTED}
    assert "the recorder lost 1 calls" in done.summary.tainted_from_start
    calls = Recording(partial, truncated=True).calls()
    assert [(c.method.rsplit("/", 1)[1], c.lost) for c in calls] == [("OpenAccount", 0), ("GetAccount", 1)]
