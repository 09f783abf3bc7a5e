"""Every upstream target grpc takes reaches the upstream through Envoy, or is one clear error at start.

The config takes grpc's targets (`dns:`, `ipv4:`, `ipv6:`, `unix:` and HOST:PORT); the Python data plane
hands them to grpc, the Envoy data plane turns them into its clusters' endpoints (`shim.dataplane.targets`).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from shim.dataplane import envoy as envoy_process
from shim.dataplane.targets import DEFAULT_PORT, endpoints
from shim.errors import ConfigError
from shim.testing import running_shim
from tests.helpers import run_shim
from tests.processes import shim_process

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")

Handler = Callable[[AsyncIterator[bytes], aio.ServicerContext[bytes, bytes]], Awaitable[list[bytes]]]


class _Named(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """A server that answers every call with its own name, and counts them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        async def answer(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            self.calls += 1
            return self.name.encode()

        return grpc.unary_unary_rpc_method_handler(answer)


async def _server(name: str, host: str = "127.0.0.1") -> tuple[aio.Server, _Named, int]:
    server, named = aio.server(), _Named(name)
    server.add_generic_rpc_handlers([named])
    port = server.add_insecure_port(f"[{host}]:0" if ":" in host else f"{host}:0")
    await server.start()
    return server, named, port


async def _answers(address: str, count: int = 1) -> list[Any]:
    out: list[Any] = []
    async with aio.insecure_channel(address) as channel:
        for _ in range(count):
            try:
                out.append(await channel.unary_unary("/test.Wide/Call")(b"x", timeout=10))
            except aio.AioRpcError as exc:
                out.append(exc.code())
    return out


@pytest.mark.parametrize(
    "form",
    [
        "localhost:{port}",
        "dns:localhost:{port}",
        "dns:///localhost:{port}",
        "dns:///127.0.0.1:{port}",
        "ipv4:127.0.0.1:{port}",
        "ipv6:[::1]:{port6}",
        "dns:///[::1]:{port6}",
    ],
)
async def test_each_target_form_reaches_the_upstream_through_envoy(form: str) -> None:
    """The forms grpc takes for one address, through Envoy, as through grpc (the Python data plane)."""
    server, _, port = await _server("bank")
    server6, _, port6 = await _server("bank", "::1")
    target = form.format(port=port, port6=port6)
    try:
        for dataplane in ("python", "envoy"):
            async with running_shim(target, dataplane=dataplane) as (shim, _):
                assert await _answers(shim.address) == [b"bank"], (dataplane, target)
    finally:
        await server.stop(None)
        await server6.stop(None)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
async def test_several_addresses_are_tried_in_their_order_as_grpc_does(family: str) -> None:
    """`ipv4:A,B` (or `ipv6:[A]:P,[B]:Q`): every call goes to the first address while it answers, as grpc's
    default (pick_first) has it. Before, Envoy was given one address made of the whole list, and every call
    failed ("no healthy upstream")."""
    host = "127.0.0.1" if family == "ipv4" else "::1"
    shown = host if family == "ipv4" else f"[{host}]"
    (first, first_named, first_port), (second, second_named, second_port) = [
        await _server(name, host) for name in ("first", "second")
    ]
    target = f"{family}:{shown}:{first_port},{shown}:{second_port}"
    try:
        for dataplane in ("python", "envoy"):
            async with running_shim(target, dataplane=dataplane) as (shim, _):
                assert await _answers(shim.address, 10) == [b"first"] * 10, (dataplane, target)
        assert (first_named.calls, second_named.calls) == (20, 0)
    finally:
        await first.stop(None)
        await second.stop(None)


async def test_past_an_address_that_cannot_be_reached_the_calls_go_to_the_next() -> None:
    """With the first address refusing connections, the calls reach the second. The calls that find the
    first unreachable fail (UNAVAILABLE, as when a single address cannot be reached): on Envoy the first,
    or those made in the moment it takes to pass the address over (a dozen on a starved machine); grpc may
    fail the first too. From then on every call reaches the second."""
    # a port bound and never listened on refuses connections, and no other test's server can take it meanwhile
    # (a server stopped here let one do so: every call then waited for its deadline, 100 times)
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    gone_port = gone.getsockname()[1]
    second, _, second_port = await _server("second")
    target = f"ipv4:127.0.0.1:{gone_port},127.0.0.1:{second_port}"
    answers = {}
    try:
        for dataplane in ("python", "envoy"):
            async with running_shim(target, dataplane=dataplane) as (shim, _):
                got = []
                while b"second" not in got and len(got) < 100:
                    got += await _answers(shim.address)
                answers[dataplane] = (got, await _answers(shim.address, 5))
    finally:
        await second.stop(None)
        gone.close()
    for dataplane, (before, after) in answers.items():
        assert before[-1] == b"second", (dataplane, before)
        assert set(before[:-1]) <= {grpc.StatusCode.UNAVAILABLE}, (dataplane, before)
        assert after == [b"second"] * 5, (dataplane, after)


@pytest.mark.parametrize(
    ("target", "port"),
    [("dns:///localhost", DEFAULT_PORT), ("ipv4:127.0.0.1", DEFAULT_PORT), ("ipv6:::1", DEFAULT_PORT)],
)
def test_a_target_without_a_port_names_grpcs_default_port(target: str, port: int) -> None:
    [address] = endpoints(target, "upstreams.bank.target").addresses
    assert address["socket_address"]["port_value"] == port


async def test_a_bank_target_without_a_port_starts_the_shim(tmp_path: Path) -> None:
    """`shim serve --bank dns:///localhost` (grpc's port 443) on Envoy starts and serves, as on the Python
    data plane. Before, the comparison plane died with a 42-line traceback (`int('localhost')`)."""
    async with shim_process(
        "--bank", "dns:///localhost", "--listen", "127.0.0.1:0", "--dataplane", "envoy",
        "--store", tmp_path / "shim.db",
    ) as shim:  # fmt: skip
        assert shim.ready["dataplane"] == "envoy"
        assert [line for line in shim.stderr if "Traceback" in line] == []


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("dns://127.0.0.1:53/localhost:50051", "names a DNS server"),
        ("ipv4:localhost:50051", "not an ipv4 address"),
        ("ipv6:127.0.0.1:50051", "not an ipv6 address"),
        ("ipv4:127.0.0.1:70000", "not one"),
        ("passthrough:///localhost:50051", "scheme 'passthrough'"),
        ("dns:///local host:50051", "neither a host name nor an IP address"),
    ],
)
def test_a_target_envoy_cannot_use_is_one_line_at_start(tmp_path: Path, target: str, says: str) -> None:
    """A target the config takes but Envoy cannot be given: `shim serve` on Envoy exits 2 with one line
    naming the setting, the target and the Python data plane, which takes it."""
    done = run_shim(
        "serve", "--bank", target, "--listen", "127.0.0.1:0", "--dataplane", "envoy",
        "--store", tmp_path / "shim.db", timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"shim: error: upstreams.bank.target: {target!r}"), line
    assert says in line, line
    assert "--dataplane python" in line, line
    with pytest.raises(ConfigError, match=says):
        endpoints(target, "upstreams.bank.target")


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("ipv4:abc", "not an ipv4 address"),
        ("ipv6:127.0.0.1", "not an ipv6 address"),
        ("unix:", "names no socket path"),
        ("ipv4:127.0.0.1:70000", "not one"),
    ],
)
def test_a_target_of_grpcs_own_schemes_naming_no_address_stops_the_python_plane_at_start(
    tmp_path: Path, target: str, says: str
) -> None:
    """On the Python data plane, a target grpc could never connect to (one of its own address schemes
    naming no address it takes) was served on, and said only later, as an upstream not reachable: now
    one line at start, naming the setting. Other targets are grpc's to resolve, as given."""
    done = run_shim(
        "serve", "--bank", target, "--listen", "127.0.0.1:0", "--dataplane", "python",
        "--store", tmp_path / "shim.db", timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"shim: error: upstreams.bank.target: {target!r}"), line
    assert says in line, line
    assert "grpc would never connect" in line, line
