"""Methods the primary answers alone: forwarded like any other call, never mirrored nor compared.

gRPC server reflection is one (`REFLECTION_METHODS`): it describes a server, not
the service. A client asking the shim gets the primary's own answer, so it sees
what Bank shows, and nothing Bank hides; BK's answer would be no evidence either
way, and mirroring it would put a method no one calls in the reports and the gate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc

from shim._handler import ProxyHandler, Route
from shim.exporter import Latencies
from shim.metrics import Counters
from shim.modes import Modes
from shim.plan import Plans

REFLECTION_METHODS = frozenset(
    {
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


class _Unmirrored(Mapping[str, Route]):
    """The routes of each mode without their mirroring: the primary each has now (a mode switch, or a
    certificate reload that gives the route a new channel, applies here at once)."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = routes

    def __getitem__(self, mode: str) -> Route:
        return Route(self._routes[mode].primary, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)


class PrimaryOnly(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """Serves `methods` by forwarding them to the primary of the mode in force; any other method is left
    to the handlers after it."""

    def __init__(
        self,
        methods: frozenset[str],
        routes: Mapping[str, Route],
        modes: Modes,
        counters: Counters,
        latencies: Latencies,
    ) -> None:
        self._methods = methods
        self._proxy = ProxyHandler(_Unmirrored(routes), modes, Plans(None), counters, latencies=latencies)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if handler_call_details.method not in self._methods:
            return None
        return self._proxy.service(handler_call_details)
