"""Methods the primary answers alone: forwarded like any other call, never mirrored nor compared.

gRPC server reflection is one (`REFLECTION_METHODS`): it describes a server, not
the service. A client asking the shim gets the primary's own answer, so it sees
what Bank shows, and nothing Bank hides; BK's answer would be no evidence either
way, and mirroring it would put a method no one calls in the reports and the gate.

With adapters, BK has an interface of its own: while BK answers (`bk-primary`, `bk`), its reflection
would show the clients BK's interface, not the Bank interface the shim serves them. Then reflection is
answered from the shim's descriptors (`from_descriptors`), as with `reflection = "shim"`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from comparators import DescriptorRegistry
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
        from_descriptors: grpc.RpcMethodHandler | None = None,
    ) -> None:
        self._methods = methods
        self._modes = modes
        self._proxy = to_the_primary(routes, modes, counters, latencies)
        self._from_descriptors = from_descriptors  # what answers while BK (with adapters) is the primary

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        if method not in self._methods:
            return None
        if self._from_descriptors is not None and self._modes.of(method) in BK_ANSWERS:
            return self._from_descriptors
        return self._proxy.service(handler_call_details)


BK_ANSWERS = frozenset({"bk-primary", "bk"})


def to_the_primary(
    routes: Mapping[str, Route], modes: Modes, counters: Counters, latencies: Latencies
) -> ProxyHandler:
    """A handler forwarding any call to the primary of its mode alone, never mirrored nor compared."""
    return ProxyHandler(_Unmirrored(routes), modes, Plans(None), counters, latencies=latencies)


def reflection_from(registry: DescriptorRegistry) -> grpc.RpcMethodHandler:
    """Reflection answered from the descriptors (both versions: their messages are the same on the wire)."""
    services = sorted({path.split("/")[1] for path in registry.methods})
    servicer = reflection.aio.ReflectionServicer([*services, reflection.SERVICE_NAME], pool=registry.pool)
    return grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
