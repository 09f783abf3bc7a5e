"""Two recording shims in a row, for the tests of recording into the store: the client calls a shim that
records to a file, whose primary is a shim that records into the store, whose primary is Bank. Both
see the same calls and the same answers, so the store's recording, exported, must hold what the file
holds. Both are in `bank` mode with no BK."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from comparators import DescriptorRegistry
from shim.app import Shim
from shim.recording.format import RecordedCall, Recording
from shim.testing import running_shim
from tests.helpers import shim_command


@contextlib.asynccontextmanager
async def chained(
    bank: str, registry: DescriptorRegistry, path: Path, store: str, **settings: Any
) -> AsyncIterator[tuple[Shim, Shim]]:
    """(the file's shim, which the client calls; the store's shim), each stopped on exit (the file's
    first, so that every call it recorded has reached the store's)."""
    record = settings.pop("record", {})
    async with running_shim(
        bank, registry=registry, record={"into": "store", **record}, store={"url": store}, **settings
    ) as (into_store, _):
        assert into_store.config.bk is None
        assert not into_store.dispatchers
        async with running_shim(
            into_store.address, registry=registry, record={"path": str(path), **record}, **settings
        ) as (to_file, _):
            yield to_file, into_store


def essentials(call: RecordedCall) -> tuple[object, ...]:
    """What a call's recording must say wherever it was recorded: method, requests, answers, status, keys."""
    return (
        call.method,
        call.is_write,
        call.requests,
        call.responses,
        call.code,
        call.details,
        call.keys,
        call.unsampled,
        call.note,
    )


async def export(store: str, out: Path, *more: str) -> tuple[int | None, str, str]:
    """`shim record export --store STORE [MORE] OUT`: exit status, stdout, stderr."""
    return await shim_command("record", "export", "--store", store, *more, out)


def same_as_file(exported: Path, file: Path, truncated: bool = False) -> list[RecordedCall]:
    """The exported recording's calls, after checking that they are the file recording's, one for one,
    in the same order; and that both are whole (or, with `truncated`, that the export has no end)."""
    ours, theirs = Recording(exported, truncated=truncated), Recording(file)
    ending = ours.check()
    assert ending.whole is not truncated
    assert theirs.check().whole
    calls = list(ours.calls())
    assert [essentials(c) for c in calls] == [essentials(c) for c in theirs.calls()]
    assert [c.seq for c in calls] == list(range(len(calls)))
    assert ours.header.methods == theirs.header.methods
    assert (ours.header.redacted, ours.header.sampled) == (theirs.header.redacted, theirs.header.sampled)
    return calls
