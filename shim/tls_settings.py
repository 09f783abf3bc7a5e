"""[tls]: the certificate the listener serves, and the clients' CAs for mTLS (`shim.tls` uses them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import PATH, setting


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The listener serves TLS (leave the table out for plaintext, e.g. on loopback; `docs/tls.md`)."""

    SECTION: ClassVar[str] = "tls"
    cert: str = setting(
        "", PATH, "PEM certificate chain, for the name clients call (Bank's, to take its place)", shown="none"
    )
    key: str = setting("", PATH, "its private key (PEM)", shown="none")
    client_ca: str = setting(
        "", PATH, "PEM CAs of client certificates: required and verified (mTLS)", shown="none"
    )

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls: cert and key go together (the listener's certificate and its key)")
        if self.client_ca and not self.cert:
            raise ConfigError(
                "tls.client_ca: verifying clients' certificates needs TLS (tls.cert and tls.key)"
            )
