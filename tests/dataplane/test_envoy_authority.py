"""Bank gets the `:authority` grpc sends its target, on both data planes: a gateway in front of Bank may
route by it (an ingress, a service mesh's virtual host).

Before, Envoy passed on the client's (the shim's own address): a gateway routing by host sent every call
on to nothing, and the clients got UNIMPLEMENTED on the Envoy data plane where the Python one worked.
The gateway here is a real Envoy that routes only its own address (or the name given) to a real Bank.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from shim.config import Upstream
from shim.dataplane.envoy import binary
from shim.dataplane.targets import authority
from shim.testing import running_shim
from tests.helpers import until

_TYPES = "type.googleapis.com/envoy.extensions."
# the gateway is an Envoy, whichever data plane the shim runs
pytestmark = pytest.mark.skipif(binary() is None, reason="no Envoy binary on this platform")
PLANES = ["python", "envoy"]


@pytest.fixture
async def bank() -> AsyncIterator[int]:
    """A gRPC server echoing `/t.S/Echo`, on a free port."""
    server = aio.server()

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("t.S", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def gateway(bank: int, tmp_path: Path) -> Iterator[Any]:
    """Start a gateway Envoy in front of Bank that routes the calls whose `:authority` is one of `domains`
    (any other: HTTP 404, which a gRPC client reads as UNIMPLEMENTED); its port."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int, domains: list[str]) -> int:
        hcm = {
            "@type": _TYPES + "filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "gateway",
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _TYPES + "filters.http.router.v3.Router"},
                }
            ],
            "route_config": {
                "virtual_hosts": [
                    {"name": "bank", "domains": domains, "routes": [_to_bank()]},
                    {"name": "else", "domains": ["*"], "routes": [_not_found()]},
                ]
            },
        }
        listener = {
            "name": "gateway",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
        }
        http2 = {
            "@type": _TYPES + "upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
        endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": bank}}}
        cluster = {
            "name": "bank",
            "type": "STATIC",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2
            },
            "load_assignment": {
                "cluster_name": "bank",
                "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
            },
        }
        config = tmp_path / f"gateway-{port}.json"
        config.write_text(json.dumps({"static_resources": {"listeners": [listener], "clusters": [cluster]}}))
        envoy = binary()
        assert envoy is not None
        started.append(subprocess.Popen([envoy, "-c", str(config), "--use-dynamic-base-id", "-l", "error"]))
        return port

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def _to_bank() -> dict[str, Any]:
    return {"match": {"prefix": "/"}, "route": {"cluster": "bank", "timeout": "0s"}}


def _not_found() -> dict[str, Any]:
    return {"match": {"prefix": "/"}, "direct_response": {"status": 404}}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("dataplane", PLANES)
async def test_bank_behind_a_gateway_routing_by_authority_gets_its_own(gateway: Any, dataplane: str) -> None:
    port = _free_port()
    target = f"127.0.0.1:{port}"
    gateway(port, [target])
    await until(lambda: _listening(port), "the gateway listening")
    async with (
        running_shim(target, mode="bank", dataplane=dataplane) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        assert await channel.unary_unary("/t.S/Echo")(b"hello", timeout=10) == b"hello"


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_dns_target_gives_its_host_and_port_as_authority(gateway: Any, dataplane: str) -> None:
    """A `dns:///` target's authority is its host and port, without the scheme, as grpc sends it."""
    port = _free_port()
    gateway(port, [f"localhost:{port}"])
    await until(lambda: _listening(port), "the gateway listening")
    async with (
        running_shim(Upstream("bank", f"dns:///localhost:{port}"), mode="bank", dataplane=dataplane) as (
            shim,
            _,
        ),
        aio.insecure_channel(shim.address) as channel,
    ):
        assert await channel.unary_unary("/t.S/Echo")(b"hello", timeout=10) == b"hello"


@pytest.mark.parametrize(
    ("target", "server_name", "expected"),
    [
        ("10.0.0.1:50051", "", "10.0.0.1:50051"),
        ("dns:///bank.internal:443", "", "bank.internal:443"),
        ("dns:bank.internal:443", "", "bank.internal:443"),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", "", "10.0.0.1:1,10.0.0.2:1"),
        ("ipv6:[::1]:50051", "", "[::1]:50051"),
        ("unix:/run/bank.sock", "", "localhost"),
        ("10.0.0.1:50051", "bank.example", "bank.example"),
    ],
)
def test_the_authority_of_a_target_is_grpcs(target: str, server_name: str, expected: str) -> None:
    assert authority(target, server_name) == expected
