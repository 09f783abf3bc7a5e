"""Fixtures of the venue's tests: both sides, each on a real server on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.services.venue.server import Served, serve


@pytest.fixture
async def bank() -> AsyncIterator[Served]:
    served = await serve("bank")
    try:
        yield served
    finally:
        await served.stop()


@pytest.fixture
async def bk() -> AsyncIterator[Served]:
    served = await serve("bk")
    try:
        yield served
    finally:
        await served.stop()


@pytest.fixture(params=["bank", "bk"])
async def side(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """Each side in turn."""
    served = await serve(request.param)
    try:
        yield served
    finally:
        await served.stop()
