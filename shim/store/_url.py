"""How a store url is shown (log lines, errors, reports, the ready line, the commands' output): a PostgreSQL
url rebuilt from what libpq reads of it, never from its text, so that no password or other secret
parameter is shown however it is spelled (a "?", "#" or "/" in it, or a `sslpassword` parameter); and a
PostgreSQL url libpq cannot read refused in the shim's own words (libpq's own message quotes the url,
password and all)."""

from __future__ import annotations

import re
from urllib.parse import quote

import psycopg
import psycopg.conninfo

from shim.store._errors import StoreError

HIDDEN = "***"
# libpq's parameters that hold a secret (PostgreSQL 18 adds oauth_client_secret); any other whose name says
# so is hidden too
_SECRET = frozenset({"password", "sslpassword", "oauth_client_secret"})
_PERCENT = "write it percent-encoded: %25 for %, %40 for @, %2F for /, %20 for a space"


def _secret(name: str) -> bool:
    return name in _SECRET or "password" in name or "secret" in name


def _unshown(url: str) -> str:
    """The url with nothing after its scheme: what a url that cannot be read safely is shown as."""
    scheme = re.match(r"[a-z][a-z0-9+.-]*:(//)?", url, flags=re.IGNORECASE)
    return f"{scheme.group() if scheme else ''}... (not shown: it may hold a password)"


def _why(libpq: str) -> str:
    """What is wrong with a url libpq refused, in words that quote none of it."""
    if "spaces" in libpq:
        return f"it holds a space ({_PERCENT})"
    if "percent-encoded" in libpq:
        return f"a % not followed by two hexadecimal digits ({_PERCENT})"
    if "IPv6" in libpq or "]" in libpq:
        return "a [ opens an IPv6 host address that no ] closes"
    if "query parameter" in libpq:
        return "a query parameter is not NAME=VALUE, or names no parameter libpq knows"
    return "libpq cannot read it as a PostgreSQL connection url"


def postgres_shown(url: str) -> str:
    """A postgresql:// (or postgres://) url as shown: every secret parameter ***. A StoreError when libpq
    cannot read it, or reads it otherwise than it says (a "/" or "@" in the password, not percent-encoded,
    ends the password there: the rest is read as the host, port or database, which would show it)."""
    scheme = url.partition("://")[0]
    try:
        params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(url).items() if v is not None}
    except psycopg.Error as error:
        why = _why(str(error))  # never shown itself: it quotes the url
        raise StoreError(f"invalid store url {_unshown(url)}: {why}") from None
    hosts, ports = params.pop("host", ""), params.pop("port", "")
    if (
        "@" in hosts
        or "@" in params.get("dbname", "")
        or any(p and not p.isdigit() for p in ports.split(","))
    ):
        raise StoreError(
            f"invalid store url {_unshown(url)}: libpq reads part of it as the host, port or database"
            f" name: a / or @ in the user name or password ends it there ({_PERCENT})"
        )
    user = params.pop("user", "")
    userinfo = ""
    if user:  # a password without a user stays a parameter, shown *** with the others
        userinfo = quote(user, safe="") + (f":{HIDDEN}" if params.pop("password", "") else "")
    authority = _authority(hosts, ports)
    if authority is None:
        params = {"host": hosts, "port": ports, **params} if ports else {"host": hosts, **params}
        authority = ""
    dbname = params.pop("dbname", None)
    query = "&".join(
        f"{name}={HIDDEN if _secret(name) else quote(value, safe='')}" for name, value in params.items()
    )
    return (
        f"{scheme}://{userinfo + '@' if userinfo else ''}{authority}"
        f"{'/' + quote(dbname, safe='') if dbname is not None else ''}{'?' + query if query else ''}"
    )


def _authority(hosts: str, ports: str) -> str | None:
    """host[:port],... as a url writes them; None when a host is a socket directory (given as a parameter)."""
    names, numbers = hosts.split(",") if hosts else [], ports.split(",") if ports else []
    if any(name.startswith(("/", "@")) for name in names) or len(numbers) > max(len(names), 1):
        return None
    numbers += [""] * (len(names) - len(numbers))
    if not names:
        return f":{numbers[0]}" if numbers and numbers[0] else ""
    shown = [f"[{n}]" if ":" in n else n for n in names]
    return ",".join(f"{n}:{p}" if p else n for n, p in zip(shown, numbers, strict=True))


def other_shown(url: str) -> str:
    """Any other store url as shown: as it is (a file's path), or its scheme alone when it names a host,
    which may be written with a user and password (sqlite://user:pw@host/..., mysql://...)."""
    if re.match(r"[a-z][a-z0-9+.-]*://[^/]", url, flags=re.IGNORECASE):
        return _unshown(url)
    return url


def shown_url(url: str) -> str:
    """Any store url as shown, one that cannot be read included (never an error)."""
    if re.match(r"postgres(ql)?://", url, flags=re.IGNORECASE):
        try:
            return postgres_shown(url)
        except StoreError:
            return _unshown(url)
    return other_shown(url)
