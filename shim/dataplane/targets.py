"""An upstream's gRPC target, as the endpoints of Envoy's cluster.

The config takes the targets grpc takes (the Python data plane hands them to grpc as they are). Envoy's
cluster for an upstream is given what the target names:

- `HOST:PORT`, `[IPV6]:PORT`, `dns:HOST[:PORT]`, `dns:///HOST[:PORT]` (an IPv6 address with a port in
  brackets, as grpc has it): one endpoint; a host name is resolved by Envoy (a `LOGICAL_DNS` cluster: the
  first address the name resolves to, resolved again as its DNS records live), an IP address is taken as
  it is;
- `ipv4:ADDR[:PORT][,ADDR[:PORT]...]`, `ipv6:ADDR[,...]` or `ipv6:[ADDR]:PORT[,...]`: each address an
  endpoint of its own, in one cluster, tried in their order (`cluster_fields`);
- `unix:PATH`, `unix:///ABSOLUTE_PATH`: the socket.

A port left out is 443, as in grpc. Anything else (a DNS server named, `dns://SERVER/HOST`, another scheme,
an address that is not one) is a ConfigError naming the setting, at start: the Python data plane
(`--dataplane python`) takes every target grpc takes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shim.errors import ConfigError

if TYPE_CHECKING:  # for annotations only: importing the config imports shim.dataplane.settings
    from shim.config import Config

DEFAULT_PORT = 443  # grpc's, for a target that names no port
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """What Envoy's cluster for one target is given."""

    addresses: tuple[dict[str, Any], ...]  # Envoy addresses, one for each endpoint
    resolved: bool  # the one endpoint is a host name Envoy resolves (LOGICAL_DNS); else STATIC
    host: str  # the host the target names first ("" for a unix socket): what TLS expects by default


class _Refused(ValueError):
    """Why a target is not one the Envoy data plane can use (said in the ConfigError)."""


def endpoints(target: str, key: str) -> Endpoints:
    """The endpoints of `target`, the value of the setting `key` (a ConfigError when Envoy cannot use it)."""
    try:
        return _endpoints(target)
    except _Refused as exc:
        raise ConfigError(
            f"{key}: {target!r} {exc}; the Envoy data plane takes HOST:PORT, dns:[///]HOST[:PORT], "
            "ipv4:ADDR[:PORT][,...], ipv6:ADDR or [ADDR]:PORT[,...] and unix:PATH (--dataplane python "
            "hands the target to grpc as it is)"
        ) from None


def check_grpc_targets(config: Config) -> None:
    """On the Python data plane, a ConfigError before anything starts for an upstream target grpc itself
    could never connect to: one of grpc's own address schemes (ipv4:, ipv6:, unix:) naming no address it
    takes. Any other target is grpc's to resolve, as it is given (a name resolver of its own, say)."""
    for upstream in (config.bank, config.bk):
        if upstream is None or upstream.target.partition(":")[0] not in ("ipv4", "ipv6", "unix"):
            continue
        try:
            _endpoints(upstream.target)
        except _Refused as exc:
            raise ConfigError(
                f"upstreams.{upstream.name}.target: {upstream.target!r} {exc}: grpc would never connect"
                " (ipv4:ADDR[:PORT][,...], ipv6:ADDR or [ADDR]:PORT[,...], unix:PATH)"
            ) from None


def check_targets(config: Config) -> None:
    """A ConfigError, before anything starts, when an upstream's target is not one Envoy can use, or the
    address to listen on names a host (Envoy listens on IP addresses only)."""
    for upstream in (config.bank, config.bk):
        if upstream is not None:
            endpoints(upstream.target, f"upstreams.{upstream.name}.target")
    listen = config.serving.listen
    if not listen.startswith("unix:"):
        host, _, port = listen.rpartition(":")
        if not _is_ip(host.strip("[]")):
            raise ConfigError(
                f"listen: {listen!r} names a host, and Envoy listens on an IP address: give one"
                f" (127.0.0.1:{port}, [::1]:{port}, 0.0.0.0:{port} or [::]:{port} for every address), or use"
                " --dataplane python"
            )


def cluster_fields(name: str, found: Endpoints) -> dict[str, Any]:
    """A cluster's fields that `found` sets: its type and endpoints. Several addresses are each a priority of
    their own, in their order: Envoy sends every call to the first while it takes them, as grpc's default
    (pick_first) does. One whose connection cannot be made is passed over (outlier detection: one failure
    to connect ejects it, for 30 s at first); the calls that find it so before then fail, UNAVAILABLE
    (retrying them on the next address would have Envoy keep a copy of every request body for it)."""
    out: dict[str, Any] = {
        "type": "LOGICAL_DNS" if found.resolved else "STATIC",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"priority": n, "lb_endpoints": [{"endpoint": {"address": address}}]}
                for n, address in enumerate(found.addresses)
            ],
        },
    }
    if found.resolved:
        out["dns_lookup_family"] = "V4_PREFERRED"
    if len(found.addresses) > 1:
        out["outlier_detection"] = {
            "split_external_local_origin_errors": True,  # a connection not made counts, an answer never
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
            "max_ejection_percent": 100,
        }
    return out


def authority(target: str, server_name: str = "") -> str:
    """The `:authority` grpc sends an upstream of this target, which Envoy sends it too: `server_name` when
    set (TLS); "localhost" for a unix socket; else the target without its scheme (`dns:///`, `dns:`,
    `ipv4:`, `ipv6:`), as grpc has it. A gateway in front of Bank may route by it."""
    if server_name:
        return server_name
    scheme, colon, rest = target.partition(":")
    if colon and scheme in ("unix", "unix-abstract"):
        return "localhost"
    if colon and scheme in ("ipv4", "ipv6"):
        return rest
    if colon and scheme == "dns":
        return rest.removeprefix("///") if rest.startswith("///") else rest
    return target


def _endpoints(target: str) -> Endpoints:
    scheme, colon, rest = target.partition(":")
    if colon and scheme == "unix":
        path = rest.removeprefix("//")
        if not path or (rest.startswith("//") and not path.startswith("/")):
            raise _Refused("names no socket path (unix:PATH or unix:///ABSOLUTE_PATH)")
        return Endpoints(({"pipe": {"path": path}},), resolved=False, host="")
    if colon and scheme in ("ipv4", "ipv6"):
        parts = [_ip_port(part, scheme) for part in rest.split(",")]
        return Endpoints(tuple(_socket(h, p) for h, p in parts), resolved=False, host=parts[0][0])
    if colon and scheme == "dns":
        if rest.startswith("//"):
            server, slash, rest = rest[2:].partition("/")
            if server or not slash:
                raise _Refused("names a DNS server to ask (dns://SERVER/HOST:PORT)")
        return _one(rest)
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", target):
        raise _Refused(f"has the scheme {scheme!r}")
    return _one(target)  # no scheme: grpc's default, dns


def _one(text: str) -> Endpoints:
    host, port = _host_port(text)
    if not _is_ip(host) and not _HOST_NAME.fullmatch(host):
        raise _Refused(f"names {host!r}, which is neither a host name nor an IP address")
    port = DEFAULT_PORT if port is None else port
    return Endpoints((_socket(host, port),), resolved=not _is_ip(host), host=host)


def _ip_port(text: str, family: str) -> tuple[str, int]:
    host, port = _host_port(text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _Refused(f"names {host!r}, which is not an {family} address") from None
    if address.version != int(family[-1]):
        raise _Refused(f"names {host!r}, which is not an {family} address")
    return host, DEFAULT_PORT if port is None else port


def _host_port(text: str) -> tuple[str, int | None]:
    """A host and its port (None when none is named), as grpc splits them: an IPv6 address with a port is
    in brackets, one without a port may go without them."""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _Refused("has an unclosed or misplaced bracket")
        port_text: str | None = after[1:] if after else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # no colon, or an IPv6 address without brackets (and so without a port)
        host, port_text = text, None
    if not host:
        raise _Refused("names no host")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise _Refused(f"names the port {port_text!r}, which is not one")
    return host, int(port_text)


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
