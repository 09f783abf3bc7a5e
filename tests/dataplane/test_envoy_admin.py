"""Envoy's admin interface, read many times a second by the comparison plane, on kept-alive connections."""

from __future__ import annotations

import asyncio

import pytest

from sample_ledger.server import RunningLedger
from shim.dataplane import EnvoyPlane
from shim.dataplane import envoy as envoy_process
from shim.dataplane.envoy_admin import admin_request
from shim.testing import running_shim

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
CONNECTIONS = "http.admin.downstream_cx_total"


async def test_reads_of_envoys_figures_reuse_their_connections(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A hundred reads of Envoy's figures, ten at a time, open at most a few connections to its admin
    interface (one each, before: more than the reads themselves cost); each read answers in full."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, _):
        plane = shim.front
        assert isinstance(plane, EnvoyPlane)
        envoy = plane.envoy
        assert envoy is not None

        async def opened() -> int:  # counted on a connection of its own, which it adds to the count
            status, body = await admin_request(envoy.admin, f"/stats?filter=^{CONNECTIONS}$")
            assert status == 200
            return int(body.decode().rpartition(": ")[2])

        before = await opened()
        for _ in range(10):
            reads = await asyncio.gather(*(envoy.stats() for _ in range(10)))
            assert all(len(r) > 100 and r[CONNECTIONS] >= before for r in reads)
        assert await opened() - before <= 1 + 10  # the last count's own, and at most one per read at once
        await envoy.stop()  # the kept connections close with it
