"""TLS files the shim cannot use are refused with one clear line naming the setting, at start (exit 2)
and on SIGHUP (the certificates in use stay): a key under a passphrase, a CA file with no certificate.
On both data planes. Certificates are made in the tests (trustme)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.app import Shim
from shim.config import Config, Upstream
from shim.dataplane import EnvoyPlane
from shim.dataplane.envoy_config import write_secrets
from shim.errors import ConfigError
from shim.testing import running_shim
from shim.tls import ServerTls, upstream_files
from shim.tls_settings import TlsSettings
from tests.backends import Running, scripted_server
from tests.helpers import NEEDS_ENVOY, registry_of, until
from tests.shim.test_tls import Pki, _client_credentials, _localhost, _say, echo

TIMEOUT = 20.0
PLANES = [pytest.param("python"), pytest.param("envoy", marks=NEEDS_ENVOY)]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def bank() -> AsyncIterator[Running]:
    server = await scripted_server(echo)
    yield server
    await server.stop()


def encrypted(key_file: str) -> bytes:
    """The key of `key_file`, under the passphrase "secret"."""
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    return key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def refusals(config: Config, tmp_path: Path) -> list[str]:
    """What each data plane says of the config's TLS files: the Python plane's and Envoy's."""
    said = []
    with pytest.raises(ConfigError) as python:
        Shim(config)
    said.append(str(python.value))
    with pytest.raises(ConfigError) as envoy:
        write_secrets(config, tmp_path, 1)
    said.append(str(envoy.value))
    return said


def test_a_key_under_a_passphrase_is_refused_with_one_clear_line(pki: Pki, tmp_path: Path) -> None:
    """The listener's key or an upstream's under a passphrase: no prompt, one ConfigError naming the file."""
    cert, key = pki.server("shim", "localhost")
    locked = pki.file("locked.key", encrypted(key))
    bank = Upstream("bank", "127.0.0.1:1")
    listener = Config(bank=bank, mode="bank", tls=TlsSettings(cert=cert, key=locked))
    assert (
        refusals(listener, tmp_path)
        == [f"tls.key: {locked} is protected by a passphrase; the shim needs an unencrypted key"] * 2
    )
    chain, client_key = pki.client("shim")
    upstream = Upstream(
        "bank",
        "127.0.0.1:1",
        cert=pki.file("c.crt", chain),
        key=pki.file("c.key", encrypted_bytes(client_key)),
    )
    locked_client = f"upstreams.bank.key: {upstream.key} is protected by a passphrase"
    assert (
        refusals(Config(bank=upstream, mode="bank"), tmp_path)
        == [f"{locked_client}; the shim needs an unencrypted key"] * 2
    )


def encrypted_bytes(key: bytes) -> bytes:
    key_object = serialization.load_pem_private_key(key, password=None)
    return key_object.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret"),
    )


def test_a_ca_file_with_no_certificate_is_refused(pki: Pki, tmp_path: Path) -> None:
    """tls.client_ca or an upstream's ca holding a key, or a certificate cut short: refused, naming it."""
    cert, key = pki.server("shim", "localhost")
    whole = pki.server_ca.cert_pem.bytes()
    cut = whole[: len(whole) // 2] + b"\n-----END CERTIFICATE-----\n"
    for name, data in (("a-key.pem", Path(key).read_bytes()), ("cut.pem", cut)):
        ca = pki.file(name, data)
        bank = Upstream("bank", "127.0.0.1:1")
        listener = Config(bank=bank, mode="bank", tls=TlsSettings(cert=cert, key=key, client_ca=ca))
        assert refusals(listener, tmp_path) == [f"tls.client_ca: {ca} holds no certificate"] * 2
        upstream = Config(bank=Upstream("bank", "127.0.0.1:1", ca=ca), mode="bank")
        assert refusals(upstream, tmp_path) == [f"upstreams.bank.ca: {ca} holds no certificate"] * 2


class Serving:
    """`shim serve` in a process of its own, its log lines read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, object]] = []

    async def next(self, about: str) -> dict[str, object]:
        """The next log line whose event names `about`."""
        assert self.proc.stderr is not None
        while True:
            line = await asyncio.wait_for(self.proc.stderr.readline(), TIMEOUT)
            assert line, f"the shim ended: {self.lines[-3:]}"
            if not line.startswith(b"{"):
                self.lines.append({"event": line.decode()})
                continue
            entry = json.loads(line)
            self.lines.append(entry)
            if about in str(entry["event"]):
                return entry  # type: ignore[no-any-return]


def serve_args(bank: Running, config: str, plane: str) -> list[str]:
    return [
        sys.executable, "-m", "shim", "serve", "--listen", "127.0.0.1:0", "--bank", bank.address,
        "--config", config, "--dataplane", plane,
    ]  # fmt: skip


@pytest.mark.parametrize("plane", PLANES)
async def test_serve_with_a_key_under_a_passphrase_exits_2_with_one_line(
    pki: Pki, bank: Running, plane: str
) -> None:
    cert, key = pki.server("shim", "localhost")
    locked = pki.file("locked.key", encrypted(key))
    config = pki.file("shim.toml", f'[tls]\ncert = "{cert}"\nkey = "{locked}"\n'.encode())
    proc = await asyncio.create_subprocess_exec(
        *serve_args(bank, config, plane),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # no terminal to prompt on
    )
    _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert "Traceback" not in err.decode()
    assert (
        f"tls.key: {locked} is protected by a passphrase; the shim needs an unencrypted key" in err.decode()
    )


@pytest.mark.parametrize("plane", PLANES)
async def test_sighup_with_unusable_files_keeps_the_certificates_in_use(
    pki: Pki, bank: Running, plane: str
) -> None:
    """SIGHUP after the key is put under a passphrase, then after the client CA is replaced by a key: each
    time one "certificate not reloaded" line naming the file, the config reloaded still, and clients
    served with the certificates in use."""
    cert, key = pki.server("shim", "localhost")
    client_ca = pki.ca_file(pki.client_ca, "clients-ca.crt")
    config = pki.file(
        "shim.toml", f'[tls]\ncert = "{cert}"\nkey = "{key}"\nclient_ca = "{client_ca}"\n'.encode()
    )
    proc = await asyncio.create_subprocess_exec(
        *serve_args(bank, config, plane),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    serving = Serving(proc)
    try:
        ready = await serving.next("ready")
        address = _localhost(str(ready["listen"]))
        teller = _client_credentials(pki.server_ca, pki.client("teller"))
        assert await _say(address, teller) == b"re:hi"
        (plain_key,) = pki.read(key)

        pki.file("shim.key", encrypted_bytes(plain_key))
        proc.send_signal(signal.SIGHUP)
        refused = await serving.next("certificate")
        assert refused["level"] == "error"
        assert (
            refused["error"]
            == f"tls.key: {key} is protected by a passphrase; the shim needs an unencrypted key"
        )
        assert (await serving.next("config"))["event"] == "config reloaded"
        assert await _say(address, teller, b"again") == b"re:again"

        pki.file("shim.key", plain_key)
        pki.file("clients-ca.crt", plain_key)
        proc.send_signal(signal.SIGHUP)
        refused = await serving.next("certificate")
        assert (refused["level"], refused["error"]) == (
            "error",
            f"tls.client_ca: {client_ca} holds no certificate",
        )
        assert await _say(address, teller, b"still") == b"re:still"
        assert not any("exception" in str(line["event"]).lower() for line in serving.lines)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@NEEDS_ENVOY
async def test_envoy_applies_a_reload_that_leaves_some_files_as_they_were(pki: Pki, bank: Running) -> None:
    """A new listener certificate, the client CA as it was: the reload is applied (not "Envoy did not
    apply" after 10s) and new clients get the new certificate; a reload with no file changed is done at
    once."""
    cert, key = pki.server("shim", "localhost")
    client_ca = pki.ca_file(pki.client_ca, "clients-ca.crt")
    tls = {"cert": cert, "key": key, "client_ca": client_ca}
    async with running_shim(bank.address, dataplane="envoy", tls=tls) as (shim, _):
        plane = shim.front
        assert isinstance(plane, EnvoyPlane)
        address = _localhost(shim.address)
        teller = pki.client("teller")
        assert await _say(address, _client_credentials(pki.server_ca, teller)) == b"re:hi"
        renewed = trustme.CA()
        pki.server("shim", "localhost", ca=renewed)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await plane.reload_certificates() == []
        assert loop.time() - started < 5.0
        assert await _say(address, _client_credentials(renewed, teller), b"again") == b"re:again"
        started = loop.time()
        assert await plane.reload_certificates() == []
        assert loop.time() - started < 1.0


async def _call(address: str, method: str, request: bytes) -> bytes:
    async with aio.insecure_channel(address) as channel:
        answer: bytes = await channel.unary_unary(method)(request, timeout=5)
        return answer


@pytest.mark.parametrize(
    "method", ["/bank.v1.Ledger/GetAccount", "/echo.Echo/Say"], ids=["unary", "undescribed (a stream)"]
)
async def test_a_call_in_flight_outlives_a_reload_of_the_upstreams_certificates(
    pki: Pki, method: str
) -> None:
    """Python plane, Bank over TLS: a call running when SIGHUP gives Bank's channel new credentials gets
    its answer, however long past grace_period it runs; a reload that changes no file keeps the channel.
    A call the old channel is closed under at last (its bound) ends UNAVAILABLE, never hangs. Both
    kinds of the shim's calls: a described unary method's, and a stream's."""
    release = asyncio.Event()
    arrived: list[bytes] = []

    async def slow(requests: AsyncIterator[bytes], context: object) -> list[bytes]:
        said = [r async for r in requests]
        arrived.extend(said)
        await release.wait()
        return [b"re:" + r for r in said]

    bank_cert, bank_key = pki.server("bank", "bank.test")
    bank = await scripted_server(
        slow, credentials=grpc.ssl_server_credentials([pki.read(bank_key, bank_cert)])
    )
    ca = pki.ca_file(pki.server_ca, "bank-ca.crt")
    upstream = Upstream("bank", bank.address, ca=ca, server_name="bank.test")
    try:
        async with running_shim(upstream, grace_period=0.1, registry=registry_of(pb.DESCRIPTOR)) as (shim, _):
            channel = shim.routes["bank"].primary
            release.set()
            assert await _call(shim.address, method, b"\n\x02hi") == b"re:\n\x02hi"
            assert await shim.reload_certificates() == []
            assert shim.routes["bank"].primary is channel  # nothing changed: the same channel

            release.clear()
            call = asyncio.create_task(_call(shim.address, method, b"\n\x04slow"))
            await until(lambda: b"\n\x04slow" in arrived, "the call reaches Bank")
            pki.file("bank-ca.crt", pki.server_ca.cert_pem.bytes() + trustme.CA().cert_pem.bytes())
            assert await shim.reload_certificates() == []
            assert shim.routes["bank"].primary is not channel
            await asyncio.sleep(0.5)  # five grace periods: the old channel used to be closed by now
            assert not call.done()
            release.set()
            assert await call == b"re:\n\x04slow"

            release.clear()
            shim.channels.old_calls_within = 0.2
            cut = asyncio.create_task(_call(shim.address, method, b"\n\x03cut"))
            await until(lambda: b"\n\x03cut" in arrived, "the call reaches Bank")
            pki.file("bank-ca.crt", pki.server_ca.cert_pem.bytes())
            assert await shim.reload_certificates() == []
            with pytest.raises(aio.AioRpcError) as ended:
                await asyncio.wait_for(cut, TIMEOUT)
            assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
            release.set()
    finally:
        await bank.stop()


def _dated(pki: Pki, name: str, not_before: datetime, not_after: datetime) -> tuple[str, str]:
    cert = pki.server_ca.issue_cert("localhost", not_before=not_before, not_after=not_after)
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    return pki.file(f"{name}.crt", chain), pki.file(f"{name}.key", cert.private_key_pem.bytes())


def test_a_listener_certificate_out_of_its_dates_is_refused(pki: Pki, tmp_path: Path) -> None:
    """An expired listener certificate, or one not valid yet: refused, naming the file and the date."""
    expired = _dated(
        pki, "expired", datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    early = _dated(pki, "early", datetime(2999, 6, 7, 8, 9, 10, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC))
    bank = Upstream("bank", "127.0.0.1:1")
    config = Config(bank=bank, mode="bank", tls=TlsSettings(cert=expired[0], key=expired[1]))
    assert refusals(config, tmp_path) == [f"tls.cert: {expired[0]} expired on 2026-01-02 03:04:05 UTC"] * 2
    config = Config(bank=bank, mode="bank", tls=TlsSettings(cert=early[0], key=early[1]))
    assert (
        refusals(config, tmp_path)
        == [f"tls.cert: {early[0]} is not valid before 2999-06-07 08:09:10 UTC"] * 2
    )
    good = ServerTls(*pki.server("shim", "localhost"))
    pki.file("shim.crt", pki.read(expired[0])[0])
    pki.file("shim.key", pki.read(expired[1])[0])
    with pytest.raises(ConfigError, match=r"^tls\.cert: .*shim\.crt expired on 2026-01-02 03:04:05 UTC$"):
        good.reload()  # on SIGHUP: refused, the certificate in use stays


def test_an_expired_upstream_client_certificate_is_warned_of(pki: Pki, tmp_path: Path) -> None:
    """An upstream's client certificate that expired: the shim starts (the upstream decides), and says so."""
    now = datetime.now(UTC)
    cert = pki.client_ca.issue_cert(
        "shim@clients.test", not_before=now - timedelta(days=9), not_after=now - timedelta(days=1)
    )
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    upstream = Upstream(
        "bank",
        "127.0.0.1:1",
        cert=pki.file("c.crt", chain),
        key=pki.file("c.key", cert.private_key_pem.bytes()),
    )
    with structlog.testing.capture_logs() as logs:
        upstream_files(upstream)
        write_secrets(Config(bank=upstream, mode="bank"), tmp_path, 1)
    warned = [entry for entry in logs if entry["event"] == "upstream client certificate expired"]
    assert len(warned) == 2
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["setting"] == "upstreams.bank.cert"
    assert warned[0]["file"] == upstream.cert


def _self_signed(pki: Pki, name: str, key: Any) -> tuple[str, str]:
    """(cert, key) files of a certificate for localhost signed by its own `key`."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pki.file(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)), pki.file(
        f"{name}.key", pem
    )


async def test_a_small_rsa_key_is_served_on_python_and_refused_clearly_on_envoy(
    pki: Pki, bank: Running
) -> None:
    """A listener certificate with an RSA-1024 key: gRPC serves it, so the Python plane does too; Envoy
    does not, and says what it needs (not "the key does not match"). An Ed25519 key: no plane can use it
    (gRPC's TLS offers no signature scheme for it), each says so."""
    cert, key = _self_signed(pki, "small", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    tls = {"cert": cert, "key": key}
    async with running_shim(bank.address, tls=tls) as (shim, _):
        roots = grpc.ssl_channel_credentials(pki.read(cert)[0])
        assert await _say(_localhost(shim.address), roots) == b"re:hi"
    config = Config(bank=Upstream("bank", "127.0.0.1:1"), mode="bank", tls=TlsSettings(cert=cert, key=key))
    with pytest.raises(ConfigError) as refused:
        write_secrets(config, pki.folder, 1)
    assert str(refused.value) == (
        f"tls.cert: {cert} has an RSA key of 1024 bits; Envoy needs RSA of 2048 bits or more, or ECDSA"
        " (or run with --dataplane python)"
    )
    cert, key = _self_signed(pki, "edwards", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError, match=r"has an Ed25519 key; gRPC's TLS needs an RSA or ECDSA key$"):
        ServerTls(cert, key)  # gRPC clients and servers find no signature scheme in common with it
    config = Config(bank=Upstream("bank", "127.0.0.1:1"), mode="bank", tls=TlsSettings(cert=cert, key=key))
    with pytest.raises(ConfigError) as refused:
        write_secrets(config, pki.folder, 1)
    assert str(refused.value) == (
        f"tls.cert: {cert} has an Ed25519 key; Envoy needs RSA of 2048 bits or more, or ECDSA"
        " (or run with --dataplane python)"
    )


def test_swapped_files_are_named_as_such(pki: Pki, tmp_path: Path) -> None:
    """The key given as the certificate and the certificate as the key: said so, not "does not match"."""
    cert, key = pki.server("shim", "localhost")
    config = Config(bank=Upstream("bank", "127.0.0.1:1"), mode="bank", tls=TlsSettings(cert=key, key=cert))
    assert refusals(config, tmp_path) == [f"tls.cert: {key} holds no certificate"] * 2
    config = Config(bank=Upstream("bank", "127.0.0.1:1"), mode="bank", tls=TlsSettings(cert=cert, key=cert))
    assert refusals(config, tmp_path) == [f"tls.key: {cert} holds no private key"] * 2
