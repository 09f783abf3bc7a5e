"""What may carry the clients' calls in front of the shim's own server (`shim.dataplane`)."""

from __future__ import annotations

from typing import Any, Protocol


class Front(Protocol):
    """What carries the clients' calls in front of the shim's own server (`shim.dataplane`)."""

    @property
    def address(self) -> str:
        """Where the clients call."""

    async def settle(self) -> None:
        """Until the copies of the calls answered so far have reached the shim whole (or are given up):
        their mirrored calls have then begun."""

    async def stop(self, grace: float) -> None:
        """Take no new call; give those in flight `grace` seconds; then stop."""

    def metrics(self) -> list[Any]:
        """Its own figures, as Prometheus metric families."""
