"""[admin]: where the admin API (`shim.admin`) listens, and the variable holding its token."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import ADDRESS, TEXT, check_address, setting

ADMIN_LISTEN = "127.0.0.1:9465"  # the admin API's address unless [admin] listen says otherwise


TOKEN_ENV = (
    "SHIM_ADMIN_TOKEN"  # the variable holding the admin API's token, unless [admin] token_env names another
)


def is_loopback(address: str) -> bool:
    """Whether HOST:PORT (or a unix: socket) can be reached from this machine only."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to any address
        return False


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin API (mode switches, `shim mode`), served when its token is set (`docs/modes.md`)."""

    SECTION: ClassVar[str] = "admin"
    listen: str = setting(
        "",
        ADDRESS,
        "where it listens: loopback only (the admin API has no TLS); setting it requires the token",
        shown=f'"{ADMIN_LISTEN}" when the token is set, else not served',
    )
    token_env: str = setting(TOKEN_ENV, TEXT, "the environment variable holding its bearer token")

    def __post_init__(self) -> None:
        if self.listen:
            check_address("admin.listen", self.listen)
            if not is_loopback(self.listen):
                raise ConfigError(
                    f"admin.listen: {self.listen!r} is not a loopback address: the admin API is "
                    "served without TLS, and its bearer token would cross the network in plain text "
                    "(use 127.0.0.1, [::1], localhost or a unix: socket)"
                )
