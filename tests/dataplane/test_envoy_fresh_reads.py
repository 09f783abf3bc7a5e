"""Reads asked again of Bank at once share their reads of Envoy's figures (`FreshReads`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shim.dataplane import EnvoyPlane
from shim.testing import running_shim
from tests.backends import Running
from tests.helpers import NEEDS_ENVOY
from tests.shim.test_transparency import _observe, echo_pair

__all__ = ["echo_pair"]  # the fixture


@NEEDS_ENVOY
async def test_fifty_reads_asked_again_at_once_share_two_looks_at_envoys_figures(
    echo_pair: tuple[Running, Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty reads ask at once whether every copy Envoy sent has its place: each is answered yes, on at
    most two reads of Envoy's figures (one under way as they ask, one after). Before, each read asked on
    its own: fifty reads of four figures each."""
    bank, bk = echo_pair
    async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, sink):
        await _observe(shim.address, "unary_unary", [b"one"])
        await sink.wait_for(1)
        arrived = shim.dispatcher.shared.arrived
        assert arrived is not None
        plane = arrived.__self__  # type: ignore[attr-defined]
        assert isinstance(plane, EnvoyPlane)
        envoy = plane.envoy
        assert envoy is not None
        asked: list[str] = []
        stats = envoy.stats

        async def counted(only: str = "") -> Any:
            asked.append(only)
            return await stats(only)

        monkeypatch.setattr(envoy, "stats", counted)
        answers = await asyncio.gather(*(arrived() for _ in range(50)))
        looks = [only for only in asked if "streams_started" in only]  # one look reads four figures
    assert answers == [True] * 50
    assert 1 <= len(looks) <= 2, asked
