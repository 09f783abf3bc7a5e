"""Envoy drained on a stop: it takes no new call, and the calls in flight get the grace period.

The comparison plane drains its Envoy as it stops (`EnvoyPlane.stop`); behind `shim serve`'s supervisor,
a stop that finds no plane serving (one that died, one started again and not yet serving, one waiting
for its store) has the supervisor drain Envoy itself, the same way, before it stops Envoy: a call Bank is
serving finishes, where a plain SIGTERM to Envoy would cut it and tell the client UNAVAILABLE for a write
Bank did (a retry would do it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from shim.dataplane.envoy import Envoy
from shim.dataplane.envoy_admin import stop_listening
from shim.dataplane.envoy_config import refusing_table, write_atomically

ROUTES_FILE = "routes.json"  # beside Envoy's bootstrap, which reads it (`envoy_config.bootstrap`)
# seconds a route change waits for Envoy to say it applies it (it takes milliseconds): a switch that waits
# longer holds the clients' calls longer, so it gives up then (the old routes written again)
ROUTES_WITHIN = 2.0


async def stop_taking_calls(envoy: Envoy, routes_file: Path | None, version: int, grace: float) -> None:
    """Envoy takes no new call, and the calls in flight get `grace` seconds to end: its listener closes
    at once (a new connection is refused), each open connection's next answer carries a GOAWAY, and a
    call that still comes on one is answered by Envoy itself, UNAVAILABLE, neither sent to the primary
    nor copied (`refuse_new_calls`, routes of `version`, when there is a `routes_file`)."""
    deadline = time.monotonic() + grace
    if envoy.running.is_set():
        await stop_listening(envoy.admin)
    if routes_file is not None:
        await refuse_new_calls(envoy, routes_file, version, min(grace, ROUTES_WITHIN))
    await envoy.drain(max(deadline - time.monotonic(), 0.0))


async def refuse_new_calls(envoy: Envoy, routes_file: Path, version: int, within: float) -> None:
    """Envoy answers each new call UNAVAILABLE itself, never sending it to the primary: a call Bank served
    and the client then lost to the stop would read "not processed, retry" (a write done twice). Waits
    until Envoy applies it (routes of `version` or later), `within` seconds at most."""
    if not envoy.running.is_set():
        return
    with contextlib.suppress(OSError):
        write_atomically(routes_file, refusing_table(version))
    with contextlib.suppress(TimeoutError, OSError, ValueError):
        async with asyncio.timeout(within):
            while True:
                seen = await envoy.route_version()
                if seen.isdigit() and int(seen) >= version:
                    break
                await asyncio.sleep(0.002)
