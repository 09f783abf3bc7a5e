"""[tls]: the certificate the listener serves, and the clients' CAs for mTLS (`shim.tls` uses them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import PATH, setting


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The listener serves TLS (leave the table out for plaintext, e.g. on loopback; `docs/tls.md`). On
    SIGHUP it reads the files the config names then, the same or others; turning TLS, or the check of
    client certificates, on or off needs a restart."""

    SECTION: ClassVar[str] = "tls"
    cert: str = setting(
        "",
        PATH,
        "PEM certificate chain, for the name clients call (Bank's, to take its place)",
        reloadable=True,
        shown="none",
    )
    key: str = setting("", PATH, "its private key (PEM)", reloadable=True, shown="none")
    client_ca: str = setting(
        "",
        PATH,
        "PEM CAs of client certificates: required and verified (mTLS)",
        reloadable=True,
        shown="none",
    )

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls: cert and key go together (the listener's certificate and its key)")
        if self.client_ca and not self.cert:
            raise ConfigError(
                "tls.client_ca: verifying clients' certificates needs TLS (tls.cert and tls.key)"
            )


NAMES = ("tls.cert", "tls.key", "tls.client_ca")  # as `shim.config.changed` names them


def taken_live(old: TlsSettings, new: TlsSettings) -> bool:
    """Whether a running listener can take `new`'s files for `old`'s (SIGHUP): other files, read for the
    next handshakes. Turning TLS on or off, or the check of client certificates, needs a restart (the
    listener is set up with them or without)."""
    return bool(old.cert) == bool(new.cert) and bool(old.client_ca) == bool(new.client_ca)
