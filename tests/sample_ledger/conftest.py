"""Fixtures: Bank and BK servers on free ports, with channels, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.sample_ledger._support import Connected, connected


@pytest.fixture(params=["bank", "bk"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Connected]:
    """Each implementation in turn, for behaviour both must share."""
    async with connected(request.param) as running:
        yield running


@pytest.fixture
async def bank() -> AsyncIterator[Connected]:
    async with connected("bank") as running:
        yield running


@pytest.fixture
async def bk() -> AsyncIterator[Connected]:
    async with connected("bk") as running:
        yield running
