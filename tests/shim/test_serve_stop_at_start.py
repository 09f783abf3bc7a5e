"""A stop that comes while `shim serve` starts is never lost: the shim stops, whether the start took the
cancel or ended anyway. Before, a start step that did not take the cancel (or one that ended just as the
signal came) left the shim serving, and its supervisor waited for it for good: a bench killed as its shim
started left the shim, its comparison plane and Envoy running."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from shim import config as config_mod
from shim import dataplane
from shim.cli.serve import serve


async def test_a_stop_during_a_start_that_does_not_take_the_cancel_stops_the_shim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = dataplane.start
    started = asyncio.Event()

    async def start_ignoring_the_cancel(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(real(*args, **kwargs))
        os.kill(os.getpid(), signal.SIGTERM)  # the stop, while it starts
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # a step that does not take it: the start ends all the same
            served = await task
            started.set()
            return served

    monkeypatch.setattr(dataplane, "start", start_ignoring_the_cancel)
    config = config_mod.build(
        {
            "bank": config_mod.Upstream("bank", "127.0.0.1:1"),
            "listen": "127.0.0.1:0",
            "dataplane": "python",
            "store": {"url": ":memory:"},
            "diff_log": {"path": os.devnull},
        }
    )
    async with asyncio.timeout(30):
        status = await serve(config)
    assert started.is_set(), "the start ended although it was cancelled"
    assert status == 0
