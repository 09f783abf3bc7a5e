"""TLS for the listener and the upstreams; certificates reload without a restart.

The listener serves TLS when `[tls] cert` and `key` are set, and verifies
client certificates against `[tls] client_ca` when that is set (mTLS). An
upstream is called over TLS when `[upstreams.NAME] tls = true` (or `ca`,
`cert` or `server_name` is set), trusting `ca` (the system's CAs without it),
presenting `cert`/`key` for mTLS, and expecting `server_name` in its
certificate when the target's own name differs.

Files are read and checked at start: a missing file, one that is not PEM, a
CA file with no certificate, a key under a passphrase (never prompted for), or
a key that does not match its certificate is one clear error. `reload()` reads
them again (on SIGHUP): the listener hands the new certificate to the next
handshakes, new upstream channels are made; a bad new file leaves the old
certificates in place and says why.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import structlog

from comparators.files import read_regular
from shim.errors import ConfigError

_log = structlog.get_logger("shim.tls")

if TYPE_CHECKING:  # for annotations only: the config imports shim.dataplane, which imports this module
    from shim.config import Upstream


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file, or a ConfigError naming the setting and the file."""
    try:
        data = read_regular(path)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{what}: {path} is not a PEM file")
    return data


def read_ca(path: str, what: str) -> bytes:
    """The bytes of a PEM file of CAs, or a ConfigError when it holds no certificate (a key, a request, a
    file cut short): gRPC and Envoy would take it, then refuse every peer."""
    data = read_pem(path, what)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=data.decode("latin-1"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{what}: {path} holds no certificate") from exc
    if not context.cert_store_stats()["x509"]:
        raise ConfigError(f"{what}: {path} holds no certificate")
    return data


_FIRST_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at `at`: (tag, where its contents start, where they end)."""
    tag, length, start = der[at], der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(der[start : start + count], "big"), start + count
    if start + length > len(der):
        raise ValueError("cut short")
    return tag, start, start + length


def _time(der: bytes, element: tuple[int, int, int]) -> datetime:
    tag, start, end = element
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime: two digits of the year, 1950 to 2049
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def _up_to_validity(cert: bytes) -> tuple[bytes, int, int] | None:
    """The DER of the first certificate of a PEM chain and where its validity starts (None when it cannot
    be read: the TLS library will say why)."""
    found = _FIRST_CERTIFICATE.search(cert)
    if found is None:
        return None
    try:
        der = base64.b64decode(b"".join(found.group(1).split()), validate=True)
        _, at, _ = _element(der, 0)  # Certificate
        _, at, _ = _element(der, at)  # its TBSCertificate
        tag, _, end = _element(der, at)
        if tag == 0xA0:  # the version, when it is not 1
            at = end
        for _ in range(3):  # the serial number, the signature's algorithm, the issuer
            at = _element(der, at)[2]
    except (ValueError, IndexError, binascii.Error):
        return None
    return der, at, len(der)


def validity(cert: bytes) -> tuple[datetime, datetime] | None:
    """When the first certificate of a PEM chain is valid from and until (None when it cannot be read:
    the TLS library will say why)."""
    found = _up_to_validity(cert)
    if found is None:
        return None
    der, at, _ = found
    try:
        _, at, _ = _element(der, at)  # the validity
        first = _element(der, at)
        return _time(der, first), _time(der, _element(der, first[2]))
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
_EC = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
_NAMED = {bytes.fromhex("2b6570"): "Ed25519", bytes.fromhex("2b6571"): "Ed448"}


def key_kind(cert: bytes) -> tuple[str, int]:
    """The kind of the first certificate's public key ("RSA", "ECDSA", "Ed25519"...) and, for RSA, its
    bits (("", 0) when it cannot be read)."""
    found = _up_to_validity(cert)
    if found is None:
        return "", 0
    der, at, _ = found
    try:
        for _ in range(2):  # the validity, the subject
            at = _element(der, at)[2]
        _, at, _ = _element(der, at)  # SubjectPublicKeyInfo
        _, algorithm, bits_at = _element(der, at)
        _, oid_start, oid_end = _element(der, algorithm)
        oid = der[oid_start:oid_end]
        if oid == _EC:
            return "ECDSA", 0
        if oid != _RSA:
            return _NAMED.get(oid, "unknown"), 0
        _, bits_start, _ = _element(der, bits_at)  # the BIT STRING: unused bits, then RSAPublicKey
        _, at, _ = _element(der, bits_start + 1)
        _, modulus_start, modulus_end = _element(der, at)
        return "RSA", int.from_bytes(der[modulus_start:modulus_end], "big").bit_length()
    except (ValueError, IndexError):
        return "", 0


def _date(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_dates(cert: bytes, setting: str, path: str) -> None:
    """A listener's certificate must be valid now: a ConfigError names the date it expired on (or is
    valid from)."""
    dates = validity(cert)
    if dates is None:
        return
    now = datetime.now(UTC)
    if now > dates[1]:
        raise ConfigError(f"{setting}: {path} expired on {_date(dates[1])}")
    if now < dates[0]:
        raise ConfigError(f"{setting}: {path} is not valid before {_date(dates[0])}")


def warn_if_expired(cert: bytes, setting: str, path: str) -> None:
    """A client certificate the shim presents to an upstream: the upstream decides, the shim warns."""
    dates = validity(cert)
    if dates is not None and datetime.now(UTC) > dates[1]:
        _log.warning(
            "upstream client certificate expired",
            setting=setting,
            file=path,
            expired=_date(dates[1]),
            consequence="an upstream that checks client certificates refuses the shim's calls",
        )


class _Passphrase(Exception):
    """The key is encrypted: OpenSSL asked for its passphrase."""


def _no_passphrase() -> bytes:
    raise _Passphrase  # never a prompt on the terminal


def check_pair(cert: bytes, key: bytes, where: str, files: tuple[str, str], envoy: bool = False) -> None:
    """The key must belong to the certificate, checked by the ssl module as a handshake would, and no
    stricter than gRPC (which takes an RSA key of 1024 bits, but no Ed25519 one); with `envoy`, the key
    must be one Envoy takes too. `where` is the settings' table (`tls`, `upstreams.bank`), `files` the
    (cert, key) files, for the errors."""
    cert_path, key_path = files
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ConfigError(f"{where}.cert: {cert_path} holds no certificate")
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError(f"{where}.key: {key_path} holds no private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # gRPC's own TLS has no security levels
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        try:
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except _Passphrase:
            raise ConfigError(
                f"{where}.key: {key_path} is protected by a passphrase; the shim needs an unencrypted key"
            ) from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ConfigError(f"{where}: the key does not match the certificate") from exc
            raise ConfigError(
                f"{where}: {cert_path} and its key {key_path} cannot be used ({exc.reason or exc})"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot load the certificate and its key ({exc})") from exc
    kind, bits = key_kind(cert)
    if not envoy and kind not in ("", "RSA", "ECDSA"):  # gRPC's TLS offers no signature scheme for it
        raise ConfigError(
            f"{where}.cert: {cert_path} has an {kind} key; gRPC's TLS needs an RSA or ECDSA key"
        )
    if envoy and kind not in ("", "ECDSA") and not (kind == "RSA" and bits >= 2048):
        has = f"an RSA key of {bits} bits" if kind == "RSA" else f"an {kind} key"
        raise ConfigError(
            f"{where}.cert: {cert_path} has {has}; Envoy needs RSA of 2048 bits or more, or ECDSA"
            " (or run with --dataplane python)"
        )


class ServerTls:
    """The listener's certificate (and the CAs of its clients), reloadable."""

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self._paths = (cert, key, client_ca)
        self._current = self._load()
        self._fresh: grpc.ServerCertificateConfiguration | None = None

    @property
    def verifies_clients(self) -> bool:
        return bool(self._paths[2])

    def _load(self, paths: tuple[str, str, str] | None = None) -> grpc.ServerCertificateConfiguration:
        cert_path, key_path, ca_path = paths or self._paths
        cert, key = read_pem(cert_path, "tls.cert"), read_pem(key_path, "tls.key")
        check_pair(cert, key, "tls", (cert_path, key_path))
        check_dates(cert, "tls.cert", cert_path)
        roots = read_ca(ca_path, "tls.client_ca") if ca_path else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=roots)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current, self._fetch, require_client_authentication=self.verifies_clients
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Asked by gRPC before a handshake: the new configuration once after a reload, else None."""
        fresh, self._fresh = self._fresh, None
        return fresh

    def reload(self, paths: tuple[str, str, str] | None = None) -> None:
        """Read the files again, or the (cert, key, client_ca) `paths` a reloaded config names (with a
        client CA when, and only when, the listener has one); raises ConfigError (keeping the current
        ones) when they are bad."""
        fresh = self._load(paths)
        self._current = self._fresh = fresh
        self._paths = paths or self._paths


UpstreamFiles = tuple[bytes | None, bytes | None, bytes | None]


def upstream_files(upstream: Upstream) -> UpstreamFiles:
    """The (ca, cert, key) of a TLS upstream, read from its files now and checked."""
    where = f"upstreams.{upstream.name}"
    roots = read_ca(upstream.ca, f"{where}.ca") if upstream.ca else None
    cert = read_pem(upstream.cert, f"{where}.cert") if upstream.cert else None
    key = read_pem(upstream.key, f"{where}.key") if upstream.key else None
    if cert is not None and key is not None:
        check_pair(cert, key, where, (upstream.cert, upstream.key))
        warn_if_expired(cert, f"{where}.cert", upstream.cert)
    return roots, cert, key


def channel_credentials(upstream: Upstream, files: UpstreamFiles | None = None) -> grpc.ChannelCredentials:
    """The credentials of a TLS upstream, from `files` (else read from its files now)."""
    roots, cert, key = files if files is not None else upstream_files(upstream)
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=cert)


def channel_options(upstream: Upstream) -> list[tuple[str, str]]:
    """The name the upstream's certificate must carry, when it is not the target's."""
    if not upstream.tls or not upstream.server_name:
        return []
    return [
        ("grpc.ssl_target_name_override", upstream.server_name),
        ("grpc.default_authority", upstream.server_name),
    ]
