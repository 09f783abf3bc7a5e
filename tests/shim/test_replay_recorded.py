"""What a recording says of its calls, as `shim replay` reads it, on the sample ledger: a `.partial` file
read with --truncated; a call of another service (the venue's: tests/services/venue/test_venue_replay.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sample_ledger.server import RunningLedger, serve
from shim.recording.format import PARTIAL, Header, RecordedCall, Recording, RecordingWriter
from tests.helpers import shim_command
from tests.shim.test_replay import SAMPLE, _one_line_error, record_sample


@pytest.fixture
async def fixed_bk() -> AsyncIterator[RunningLedger]:
    ledger = await serve("bk", fixed=True)
    yield ledger
    await ledger.stop(None)


def cut_short(recording: Path, out: Path, calls: int) -> Path:
    """The recording's first `calls` calls, as its shim leaves them when killed: only `OUT.partial`."""
    source = Recording(recording)
    writer = RecordingWriter(out, source.header)
    for n, call in enumerate(source.calls()):
        if n == calls:
            break
        writer.add(call)
    writer.flush()
    writer.abandon()
    return out.with_name(out.name + PARTIAL)


async def test_truncated_reads_the_partial_file_the_error_names(
    fixed_bk: RunningLedger, tmp_path: Path
) -> None:
    """A recording whose shim was killed is only NAME.partial; the error for NAME says to replay it with
    --truncated, and `shim replay NAME --truncated` then reads NAME.partial (it said the same again)."""
    recording = await record_sample(tmp_path, calls=20)
    named = tmp_path / "killed.jsonl"
    partial = cut_short(recording, named, calls=12)
    replay_ = ("replay", named, "--config", SAMPLE, "--bk", fixed_bk.address)
    code, _, err = await shim_command(*replay_, "--store", tmp_path / "refused.db")
    assert code == 2, err
    assert f"{named}: not ended: only {partial.name} is there (read it with --truncated)" in err
    code, out, err = await shim_command(*replay_, "--store", tmp_path / "read.db", "--truncated")
    assert code == 0, err
    assert f"12 calls replayed from {partial} " in out
    assert "replay: 12 match" in out


def _recording_of(path: Path, method: str, methods: dict[str, str]) -> Path:
    """A whole recording of one call of `method`, its header listing `methods`."""
    writer = RecordingWriter(path, Header(created_at=time.time(), methods=methods, origin="empty"))
    call = RecordedCall(
        seq=0, at=time.time(), method=method, is_write=True, keys=(), correlation_id="c0", metadata=(),
        requests=(b"\x0a\x03abc",), responses=(b"\x0a\x03abc",), code=0,
    )  # fmt: skip
    writer.add(call)
    return writer.end()


async def test_a_call_of_another_service_is_refused_before_anything_is_sent(
    fixed_bk: RunningLedger, tmp_path: Path
) -> None:
    """A recording made with no descriptors lists no methods in its header: each call's method is checked
    against the config's descriptors too. One they lack is refused, naming it, before BK gets anything (it
    was sent, compared, and written into the store)."""
    other = _recording_of(tmp_path / "payments.jsonl", "/payments.v1.Payments/Pay", {})
    store = tmp_path / "other.db"
    _one_line_error(
        await shim_command("replay", other, "--config", SAMPLE, "--bk", fixed_bk.address, "--store", store),
        f"{other}: recorded from another service: /payments.v1.Payments/Pay is not in the config's"
        " descriptors",
        store,
    )
