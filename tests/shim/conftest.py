"""Fixtures shared by the shim's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sample_ledger.server import RunningLedger, serve


@pytest.fixture
async def ledgers() -> AsyncIterator[tuple[RunningLedger, RunningLedger]]:
    """A sample Bank and a sample BK on free ports."""
    bank = await serve("bank")
    try:
        bk = await serve("bk")
        try:
            yield bank, bk
        finally:
            await bk.stop(None)
    finally:
        await bank.stop(None)
