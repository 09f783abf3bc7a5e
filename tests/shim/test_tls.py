"""TLS and mTLS: clients reach the shim as they reached Bank, the shim reaches TLS upstreams, and
certificates reload on SIGHUP. Certificates are made in the tests (trustme)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc import aio

from shim.config import Config, Upstream
from shim.errors import ConfigError
from shim.testing import running_shim
from shim.tls_settings import TlsSettings
from tests.backends import OPTIONS, Running, _Scripted, scripted_server
from tests.helpers import PLANES

SAY = "/echo.Echo/Say"
TIMEOUT = 20.0


async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
    return [b"re:" + r async for r in requests]


class Pki:
    """A CA for servers and one for clients, their certificates written to a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server_ca, self.client_ca = trustme.CA(), trustme.CA()

    def file(self, name: str, data: bytes) -> str:
        path = self.folder / name
        path.write_bytes(data)
        return str(path)

    def server(self, name: str, *hosts: str, ca: trustme.CA | None = None) -> tuple[str, str]:
        """(cert, key) files of a server certificate for `hosts`."""
        cert = (ca or self.server_ca).issue_cert(*hosts)
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        return self.file(f"{name}.crt", chain), self.file(f"{name}.key", cert.private_key_pem.bytes())

    def client(self, name: str) -> tuple[bytes, bytes]:
        """(chain, key) of a client certificate signed by the client CA."""
        cert = self.client_ca.issue_cert(f"{name}@clients.test")
        return b"".join(blob.bytes() for blob in cert.cert_chain_pems), cert.private_key_pem.bytes()

    def read(self, *paths: str) -> tuple[bytes, ...]:
        return tuple(Path(p).read_bytes() for p in paths)

    def ca_file(self, ca: trustme.CA, name: str) -> str:
        return self.file(name, ca.cert_pem.bytes())


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def bank() -> AsyncIterator[Running]:
    server = await scripted_server(echo)
    yield server
    await server.stop()


def _client_credentials(ca: trustme.CA, cert: tuple[bytes, bytes] | None = None) -> grpc.ChannelCredentials:
    chain, key = cert if cert is not None else (None, None)
    return grpc.ssl_channel_credentials(ca.cert_pem.bytes(), private_key=key, certificate_chain=chain)


async def _say(address: str, credentials: grpc.ChannelCredentials | None, text: bytes = b"hi") -> bytes:
    channel = aio.secure_channel(address, credentials) if credentials else aio.insecure_channel(address)
    async with channel:
        answer: bytes = await channel.unary_unary(SAY)(text, timeout=5)
        return answer


def _localhost(address: str) -> str:
    return "localhost:" + address.rpartition(":")[2]


async def test_tls_clients_reach_the_shim_as_they_reached_bank(pki: Pki, bank: Running) -> None:
    """With [tls] cert and key, a TLS client that trusts the certificate's CA gets Bank's answer; a
    plaintext client does not get through."""
    cert, key = pki.server("shim", "localhost")
    async with running_shim(
        bank.address,
        tls={"cert": cert, "key": key},
    ) as (shim, _):
        address = _localhost(shim.address)
        assert await _say(address, _client_credentials(pki.server_ca)) == b"re:hi"
        with pytest.raises(aio.AioRpcError) as plain:
            await _say(address, None)
    assert plain.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate_signed_by_the_client_ca(pki: Pki, bank: Running) -> None:
    """With [tls] client_ca, a client without a certificate, or with one of another CA, is refused;
    one with a certificate of the client CA gets Bank's answer."""
    cert, key = pki.server("shim", "localhost")
    client_ca = pki.ca_file(pki.client_ca, "clients-ca.crt")
    stranger = trustme.CA().issue_cert("stranger@elsewhere.test")
    strange = (b"".join(b.bytes() for b in stranger.cert_chain_pems), stranger.private_key_pem.bytes())
    async with running_shim(
        bank.address,
        tls={"cert": cert, "key": key, "client_ca": client_ca},
    ) as (shim, _):
        address = _localhost(shim.address)
        answer = await _say(address, _client_credentials(pki.server_ca, pki.client("teller")))
        for credentials in (_client_credentials(pki.server_ca), _client_credentials(pki.server_ca, strange)):
            with pytest.raises(aio.AioRpcError) as refused:
                await _say(address, credentials)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert answer == b"re:hi"


async def test_upstreams_over_mtls_with_their_own_ca_and_server_name(pki: Pki) -> None:
    """Bank serves mTLS under the name bank.test only: the shim trusts Bank's CA, presents its client
    certificate and expects bank.test; BK, plaintext, is mirrored too. Without the server name, the
    certificate does not match the address and the client gets UNAVAILABLE from the shim."""
    bank_cert, bank_key = pki.server("bank", "bank.test")
    credentials = grpc.ssl_server_credentials(
        [pki.read(bank_key, bank_cert)],
        root_certificates=pki.client_ca.cert_pem.bytes(),
        require_client_auth=True,
    )
    bank = await scripted_server(echo, credentials=credentials)
    bk = await scripted_server(echo)
    chain, key = pki.client("shim")
    upstream: dict[str, Any] = {
        "ca": pki.ca_file(pki.server_ca, "server-ca.crt"),
        "cert": pki.file("shim-client.crt", chain),
        "key": pki.file("shim-client.key", key),
    }
    try:
        async with running_shim(
            Upstream("bank", bank.address, server_name="bank.test", **upstream), bk.address
        ) as (shim, sink):
            assert await _say(shim.address, None) == b"re:hi"
            (comparison,) = await sink.wait_for(1)
        async with running_shim(Upstream("bank", bank.address, **upstream)) as (shim, _):
            with pytest.raises(aio.AioRpcError) as mismatched:
                await _say(shim.address, None)
    finally:
        await bank.stop()
        await bk.stop()
    assert comparison.verdict.value == "match"
    assert mismatched.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("dataplane", PLANES)
async def test_an_upstream_on_a_unix_socket_over_tls_needs_the_name_to_expect(
    pki: Pki, tmp_path: Path, dataplane: str
) -> None:
    """Bank on a unix socket over TLS: a unix target names no host to expect in Bank's certificate, so the
    config must name it (`server_name`), else the shim stops at start naming the setting. With it, both
    data planes take a certificate for that name and refuse one the CA signed for another (UNAVAILABLE).
    Before, grpc refused every certificate, and Envoy checked no name at all: it took any the CA signed."""
    ca = pki.ca_file(pki.server_ca, "server-ca.crt")
    socket = f"unix:{tmp_path / 'bank.sock'}"
    with pytest.raises(ConfigError, match=r"upstreams.bank: .* set server_name"):
        Upstream("bank", socket, ca=ca)
    cert, key = pki.server("bank", "bank.test")
    server = aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers([_Scripted(echo)])
    server.add_secure_port(socket, grpc.ssl_server_credentials([pki.read(key, cert)]))
    await server.start()
    answers: dict[str, Any] = {}
    try:
        for server_name in ("bank.test", "localhost"):
            upstream = Upstream("bank", socket, ca=ca, server_name=server_name)
            async with running_shim(upstream, dataplane=dataplane) as (shim, _):
                try:
                    answers[server_name] = await _say(shim.address, None)
                except aio.AioRpcError as exc:
                    answers[server_name] = exc.code()
    finally:
        await server.stop(None)
    assert answers == {"bank.test": b"re:hi", "localhost": grpc.StatusCode.UNAVAILABLE}


def test_bad_tls_files_stop_the_shim_with_a_clear_error(pki: Pki, tmp_path: Path) -> None:
    """A missing file, a file that is not PEM, a key of another certificate: one ConfigError naming it."""
    from shim.app import Shim

    cert, key = pki.server("shim", "localhost")
    _, other_key = pki.server("other", "localhost")
    not_pem = pki.file("notes.txt", b"hello")
    cases = [
        (TlsSettings(cert=str(tmp_path / "missing.crt"), key=key), "tls.cert: cannot read"),
        (TlsSettings(cert=not_pem, key=key), "is not a PEM file"),
        (TlsSettings(cert=cert, key=other_key), "tls: the key does not match the certificate"),
    ]
    for tls, says in cases:
        with pytest.raises(ConfigError) as caught:
            Shim(Config(bank=Upstream("bank", "127.0.0.1:1"), mode="bank", tls=tls))
        assert says in str(caught.value)
    with pytest.raises(ConfigError, match=r"^upstreams\.bank\.ca: cannot read"):
        Shim(Config(bank=Upstream("bank", "127.0.0.1:1", ca=str(tmp_path / "none.crt")), mode="bank"))
    with pytest.raises(ConfigError, match="cert and key go together"):
        Upstream("bank", "127.0.0.1:1", cert=cert)


async def test_certificates_reload_on_sighup_and_a_bad_new_one_keeps_the_old(pki: Pki, bank: Running) -> None:
    """`shim serve` with TLS: after the files are replaced and SIGHUP sent, new connections get the new
    certificate; a bad replacement is refused with an error line and the certificate in use stays."""
    cert, key = pki.server("shim", "localhost")
    args = [sys.executable, "-m", "shim", "serve", "--listen", "127.0.0.1:0", "--bank", bank.address]
    config = pki.file("shim.toml", f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'.encode())
    proc = await asyncio.create_subprocess_exec(
        *args, "--config", config, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stderr.readline(), TIMEOUT))
        assert ready["tls"] is True
        address = _localhost(ready["listen"])
        assert await _say(address, _client_credentials(pki.server_ca)) == b"re:hi"

        renewed = trustme.CA()
        pki.server("shim", "localhost", ca=renewed)  # the same files, a certificate of another CA
        proc.send_signal(signal.SIGHUP)
        assert await _next_event(proc.stderr) == ("info", "certificates reloaded")
        assert await _say(address, _client_credentials(renewed), b"again") == b"re:again"

        pki.file("shim.crt", b"not a certificate")
        proc.send_signal(signal.SIGHUP)
        level, event = await _next_event(proc.stderr)
        assert (level, event) == ("error", "certificate not reloaded; the one in use stays")
        assert await _say(address, _client_credentials(renewed), b"still") == b"re:still"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _next_event(stream: asyncio.StreamReader) -> tuple[str, str]:
    """The level and event of the next JSON log line that is about certificates."""
    while True:
        line = await asyncio.wait_for(stream.readline(), TIMEOUT)
        assert line, "the shim ended"
        entry = json.loads(line)
        if "certificate" in entry["event"]:
            return entry["level"], entry["event"]
