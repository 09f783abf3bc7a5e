"""Replaying the tally (a second service): a key's first entry's time, stamped by its first append and read
back by a `List` that came GAP seconds later live, is moved on by the offset of the append that stamped it
when the replay sends the `List` much sooner after the append than it came. A BK whose clock runs ahead
still shows, in the times read back as in the appends' own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grpc import aio

from comparators import Verdict
from shim.recording.format import Recording
from shim.replay.run import Options, replay
from shim.testing import CapturingSink, running_shim
from tests.services.tally.server import APPEND, DESCRIPTOR_SET, LIST, REGISTRY, ListRequest, Request, serve

GAP = 1.5  # seconds between the appends and the reads live: more than the rule's tolerance (500 ms)
CONFIG = """
mode = "shadow"
descriptor_sets = ["tally.binpb"]

[upstreams.bank]
target = "127.0.0.1:1"
[upstreams.bk]
target = "127.0.0.1:1"

[methods."tally.v1.Tally/Append"]
key = ["key"]
[methods."tally.v1.Tally/List"]
key = ["key"]
read = true

[sampling]
reads = 1.0

[[rules]]
regex = 'tally\\.v1\\.\\w+\\.(at|first_at|last_at)'
rule = "timestamp"
tolerance = "500ms"
name = "clock"
"""


async def _appends_then_reads(address: str) -> None:
    async with aio.insecure_channel(address) as channel:
        append, read = channel.unary_unary(APPEND), channel.unary_unary(LIST)
        for key in ("k1", "k2"):
            await append(Request(key=key, entry="e1").SerializeToString())
        await asyncio.sleep(GAP)  # the clients' pace, not a wait for anything
        for key in ("k1", "k2"):
            await append(Request(key=key, entry="e2").SerializeToString())
            await read(ListRequest(key=key).SerializeToString())


async def test_a_time_read_back_is_moved_on_by_the_offset_of_the_write_that_stamped_it(
    tmp_path: Path,
) -> None:
    config = tmp_path / "shim.toml"
    config.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    recording = tmp_path / "tally.jsonl"
    bank = await serve(clock=0.0)
    try:
        settings = {
            "registry": REGISTRY,
            "dataplane": "python",
            "record": {"path": str(recording), "origin": "empty"},
        }
        async with running_shim(bank.address, **settings) as (shim, _):
            await _appends_then_reads(shim.address)
    finally:
        await bank.stop()
    calls = list(Recording(recording).calls())
    lists = [c for c in calls if c.method == LIST]
    assert (
        min(c.at for c in lists) - max(c.at for c in calls if c.method == APPEND and c.at < lists[0].at - 1)
        >= GAP
    )
    found = {}
    for ahead in (0.0, 2.0):
        bk = await serve(clock=ahead)
        seen = CapturingSink()
        try:
            await replay(
                Options(recording, config, str(tmp_path / f"ahead{ahead}.db"), bk=bk.address), [seen]
            )
        finally:
            await bk.stop()
        found[ahead] = sorted(
            (c.method, c.verdict, tuple(d.path for d in c.real_differences)) for c in seen.comparisons
        )
    assert found[0.0] == [(APPEND, Verdict.MATCH, ())] * 4 + [(LIST, Verdict.MATCH, ())] * 2, found[0.0]
    assert (
        found[2.0]
        == [(APPEND, Verdict.MISMATCH, ("at",))] * 4 + [(LIST, Verdict.MISMATCH, ("first_at", "last_at"))] * 2
    ), found[2.0]
