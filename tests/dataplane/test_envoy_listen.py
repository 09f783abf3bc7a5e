"""The clients' listen address on Envoy, as on the Python data plane: `[::]` takes IPv4 clients too, and a
host name is one clear error at start on Envoy (Envoy listens on IP addresses only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from grpc import aio

from shim import dataplane
from shim.config import Upstream, build, merged
from shim.errors import ConfigError
from shim.testing import _TEST_DEFAULTS, CapturingSink
from tests.backends import scripted_server
from tests.helpers import NEEDS_ENVOY, PLANES
from tests.shim.test_tls import _say, echo


@asynccontextmanager
async def _shim_on(listen: str, bank: str, plane: str) -> AsyncIterator[str]:
    """A shim in `bank` mode listening on `listen`, on data plane `plane`: its address, as bound."""
    settings = {
        "bank": Upstream("bank", bank),
        "bk": None,
        "listen": listen,
        "mode": "bank",
        "dataplane": plane,
    }
    config = build(merged(_TEST_DEFAULTS, settings))
    shim = (await dataplane.start(config, [CapturingSink()], None)).shim
    try:
        yield shim.address
    finally:
        await shim.stop(grace=0.5)


@pytest.mark.parametrize("plane", PLANES)
async def test_listening_on_any_ipv6_address_takes_ipv4_clients_too(plane: str) -> None:
    """`listen = "[::]:PORT"` takes the clients that call over IPv6 and those that call over IPv4, as grpc
    does (dual stack). Before, Envoy took IPv6 clients only: an IPv4 client got UNAVAILABLE."""
    bank = await scripted_server(echo)
    try:
        async with _shim_on("[::]:0", bank.address, plane) as address:
            port = address.rpartition(":")[2]
            answers = {}
            for host in ("[::1]", "127.0.0.1"):
                try:
                    answers[host] = await _say(f"{host}:{port}", None)
                except aio.AioRpcError as exc:
                    answers[host] = exc.code().name.encode()
    finally:
        await bank.stop()
    assert answers == {"[::1]": b"re:hi", "127.0.0.1": b"re:hi"}


@NEEDS_ENVOY
async def test_a_host_name_to_listen_on_is_one_clear_error_on_envoy() -> None:
    """`listen = "localhost:50051"` on Envoy stops the shim at start, naming the setting and what to give
    instead (before: Envoy's own "malformed IP address" line, after the shim had started its parts)."""
    with pytest.raises(ConfigError) as refused:
        async with _shim_on("localhost:0", "127.0.0.1:1", "envoy"):
            pass
    assert str(refused.value) == (
        "listen: 'localhost:0' names a host, and Envoy listens on an IP address: give one (127.0.0.1:0,"
        " [::1]:0, 0.0.0.0:0 or [::]:0 for every address), or use --dataplane python"
    )
