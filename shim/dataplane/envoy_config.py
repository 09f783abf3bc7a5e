"""Envoy's bootstrap and routes, written from the shim's config.

Envoy terminates the clients' calls and sends each one, by its method, to a
cluster: `bank`, `bk`, or `python` (the shim's own gRPC server on loopback,
for the calls that need Python on the primary path). A route that mirrors a
call also has Envoy's ext_proc filter send a copy of it, in observability
mode, to the shim's processor (`processor` cluster): Envoy never waits for the
processor, and a processor that is down, slow or gone costs the clients
nothing (`failure_mode_allow`).

The routes are served to Envoy from a file (file-based RDS): a switch of modes
writes a new file and renames it over the old one, which Envoy applies
atomically to the calls that start afterwards; calls in flight finish on the
route they started on. The file outlives Envoy: a restarted Envoy starts on the
routes in force.

What Envoy would otherwise change in a call is turned off, so that each side
sees the client's call and the client sees the primary's answer: no request id,
no `x-envoy-*` headers, the primary's `server` header passed through, no route
timeout, no idle timeout and no duration limit on streams: the client's
`grpc-timeout` reaches the primary, and the client and the primary end the call
at its deadline, as without the shim (Envoy enforcing it would end the call
with a reply of its own, which the copy would take for the primary's).

Over 400 lines: Envoy's whole configuration (listener, clusters, TLS secrets,
routes) in one place, each part beside the parts it names.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shim.dataplane import forwarded_proto, targets
from shim.tls import check_dates, check_pair, read_ca, read_pem, warn_if_expired

if TYPE_CHECKING:  # for annotations only: importing the config imports shim.dataplane.settings
    from shim.config import Config, Upstream

ROUTE_NAME = "shim"
ROUTE_HEADER = "x-shim-route"  # sent to the processor on each copy: which mirroring it belongs to
# ... and, on a method's own route, the method: known as the copy's stream opens, before any part of it
METHOD_HEADER = "x-shim-method"
# ... and, on every copy's stream, the name of the Envoy that sent it: each one started has its own
ENVOY_HEADER = "x-shim-envoy"
# on a copied call's answer, for the copy only: when Envoy had the primary's answer (`answered_at`)
ANSWERED_HEADER = "x-shim-envoy-answered"
_ANSWERED = "%START_TIME(%s.%6f)% %COMMON_DURATION(DS_RX_BEG:US_RX_BEG:us)%"
# on a copied call's request, for the copy only: when Envoy received the call (`started_at`); taken off
# before the primary, which never sees it
STARTED_HEADER = "x-shim-envoy-started"
_STARTED = "%START_TIME(%s.%6f)%"
# ... and the client's address: with the start and the path, what names the call in Envoy's record of a call
# its client left (`ended_filter`)
PEER_HEADER = "x-shim-envoy-peer"
_PEER = "%DOWNSTREAM_REMOTE_ADDRESS%"
_EXT_PROC = "envoy.filters.http.ext_proc"
SHED_ROUTE = "shed-"  # and a number: the stat prefix of a read method's route while reads are shed
SHED_KEY = "shim.shed_reads"  # Envoy's run-time value: 100 while reads are shed, else 0
ADMIN_SOCKET = (
    "admin.sock"  # Envoy's admin interface, in the private folder (renamed for each Envoy: `stamp`)
)
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TYPES = "type.googleapis.com/"
_UNLIMITED = {
    "priority": "DEFAULT",
    "max_connections": 1_000_000_000,
    "max_pending_requests": 1_000_000_000,
    "max_requests": 1_000_000_000,
    "max_retries": 1_000_000_000,
}
# Envoy's own limits on what clients and upstreams send, lifted or at Envoy's most, so that the primary's
# limits are the ones the clients meet, as without the shim:
# - calls in flight on one HTTP/2 connection: none (HTTP/2's most). Its default, 1,024, would hold back a
#   client's calls beyond it (and the copies of every call in flight go to the plane on one connection);
# - a call's headers, an answer's, its trailers: 8 MiB in all, in any number, each name or value at most
#   256 KiB as sent (compressed). Its defaults (60 KiB, 100 headers, 64 KiB) fail the call; beyond a
#   header's size it closes the client's whole connection, which no setting changes.
HEADERS_KB = 8192
HEADER_FIELD_KB = 256
_STREAMS = {"max_concurrent_streams": 2_147_483_647, "max_header_field_size_kb": HEADER_FIELD_KB}
_HEADERS_COUNT = {"max_headers_count": 2_147_483_647}
# Envoy writes the copies for the comparison plane on one HTTP/2 connection. Past that connection's
# buffer limit it pushes back on the calls the copies come from (ext_proc's stream to the processor
# shares its call's flow control, observability mode or not): a hung or slow plane would slow the
# clients' calls, or fail them at their deadlines. So the limit lies above all that Envoy's flood
# protection lets the connection queue: beyond `_PLANE_FRAMES` frames (each at most 16 KiB and a 9-byte
# header) or `_PLANE_CONTROL_FRAMES` control frames it closes the connection, and the copies on it are
# dropped and counted (`streams_closed`). The frames bound Envoy's memory for the plane, not the bytes.
_PLANE_FRAMES = 10_000  # Envoy's default, stated: the bound below depends on it
_PLANE_CONTROL_FRAMES = 1_000
_PLANE_BUFFER = _PLANE_FRAMES * (16_384 + 9) + _PLANE_CONTROL_FRAMES * 64  # about 164 MB
_CONNECTIONS_MONITOR = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """Where the calls of one method (or of every method not named: `path` "") go."""

    path: str  # "/pkg.Svc/Method", or "/pkg.Svc/" with `prefix`, or "" for every other method
    cluster: str  # "bank" | "bk" | "python"
    mirror: str = ""  # the mirroring a copy goes to ("": no copy is sent)
    prefix: bool = False
    why: str = ""  # with cluster "python": why the method needs Python on its primary path
    shed_as: str = ""  # a mirrored read's: the stat prefix of its route while reads are shed ("": never)


def _address(listen: str) -> dict[str, Any]:
    """An Envoy address to listen on (HOST:PORT, or unix:PATH)."""
    if listen.startswith("unix:"):
        return {"pipe": {"path": listen.removeprefix("unix:").removeprefix("//")}}
    host, _, port = listen.rpartition(":")
    address: dict[str, Any] = {"address": host.strip("[]"), "port_value": int(port)}
    if address["address"] == "::":  # every address, IPv4 ones too (dual stack), as grpc listens there
        address["ipv4_compat"] = True
    return {"socket_address": address}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def cluster(
    name: str, target: str, upstream: Upstream | None = None, folder: Path | None = None
) -> dict[str, Any]:
    """A cluster of the endpoints of a gRPC target (`targets`: a ConfigError when Envoy cannot use it), spoken
    to in HTTP/2 (over TLS when the upstream says so, with its certificates from the secret files in
    `folder`)."""
    found = targets.endpoints(target, f"upstreams.{upstream.name}.target" if upstream else name)
    out: dict[str, Any] = {
        "name": name,
        "connect_timeout": "5s",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": _TYPES + _HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": dict(_STREAMS)},
                "common_http_protocol_options": {**_HEADERS_COUNT, "max_response_headers_kb": HEADERS_KB},
            }
        },
        # no limit of Envoy's own on calls in flight (its defaults, 1,024, would fail the clients' calls
        # beyond them): the upstream's limits are the ones that apply, as without the shim
        "circuit_breakers": {"thresholds": [_UNLIMITED]},
        **targets.cluster_fields(name, found),
    }
    if upstream is not None and upstream.tls:
        assert folder is not None
        context: dict[str, Any] = {"alpn_protocols": ["h2"]}
        validation: dict[str, Any] = {}
        if upstream.ca:
            context["combined_validation_context"] = {
                "default_validation_context": validation,
                "validation_context_sds_secret_config": _sds(f"{name}-ca", folder),
            }
        else:
            validation["trusted_ca"] = {"filename": _system_cas()}
            context["validation_context"] = validation
        if upstream.cert:
            context["tls_certificate_sds_secret_configs"] = [_sds(f"{name}-client", folder)]
        server_name = upstream.server_name or found.host
        if server_name:
            validation["match_typed_subject_alt_names"] = [
                {
                    "san_type": "IP_ADDRESS" if _is_ip(server_name) else "DNS",
                    "matcher": {"exact": server_name},
                }
            ]
        tls: dict[str, Any] = {
            "@type": _TYPES + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": context,
        }
        if server_name and not _is_ip(server_name):
            tls["sni"] = server_name
        out["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return out


def _system_cas() -> str:
    """The system's CA bundle (what grpc trusts when an upstream names no `ca`)."""
    import ssl

    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and os.path.isfile(candidate):
            return candidate
    return "/etc/ssl/certs/ca-certificates.crt"


def _sds(name: str, folder: Path) -> dict[str, Any]:
    """A secret Envoy reads from its file in `folder`, and reads again when the file is replaced."""
    return {
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": str(folder / f"secret-{name}.json"),
                "watched_directory": {"path": str(folder)},
            },
        },
    }


def write_secrets(config: Config, folder: Path, version: int) -> list[str]:
    """The certificates and keys Envoy uses, read from the config's files now (a ConfigError names a bad
    one), written into Envoy's secret files. Called again on SIGHUP: a bad new file raises before any
    secret file is replaced, so the certificates in use stay. Only the secrets whose contents changed are
    written, at `version` (Envoy keeps an unchanged secret at its old version): their names."""
    documents: dict[str, dict[str, Any]] = {}
    if config.tls.cert:
        cert, key = read_pem(config.tls.cert, "tls.cert"), read_pem(config.tls.key, "tls.key")
        check_pair(cert, key, "tls", (config.tls.cert, config.tls.key), envoy=True)
        check_dates(cert, "tls.cert", config.tls.cert)
        documents["listener"] = {"tls_certificate": _certificate(cert, key)}
        if config.tls.client_ca:
            ca = read_ca(config.tls.client_ca, "tls.client_ca")
            documents["listener-ca"] = {"validation_context": {"trusted_ca": {"inline_string": ca.decode()}}}
    for upstream in (config.bank, config.bk):
        if upstream is None or not upstream.tls:
            continue
        where = f"upstreams.{upstream.name}"
        if upstream.ca:
            ca = read_ca(upstream.ca, f"{where}.ca")
            documents[f"{upstream.name}-ca"] = {
                "validation_context": {"trusted_ca": {"inline_string": ca.decode()}}
            }
        if upstream.cert:
            cert, key = read_pem(upstream.cert, f"{where}.cert"), read_pem(upstream.key, f"{where}.key")
            check_pair(cert, key, where, (upstream.cert, upstream.key), envoy=True)
            warn_if_expired(cert, f"{where}.cert", upstream.cert)
            documents[f"{upstream.name}-client"] = {"tls_certificate": _certificate(cert, key)}
    written = []
    for name, secret in documents.items():
        resource = {
            "@type": _TYPES + "envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": name,
            **secret,
        }
        path = folder / f"secret-{name}.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text(encoding="utf-8")).get("resources") == [resource]:
                continue
        write_atomically(path, {"version_info": str(version), "resources": [resource]})
        written.append(name)
    return written


def shed_routes(methods: Iterable[str]) -> dict[str, str]:
    """The stat prefix of each read method's route while reads are shed (by method; in the order of their
    names, so that the same methods always get the same prefixes: `shim.dataplane.read_shedding`)."""
    return {method: f"{SHED_ROUTE}{n}" for n, method in enumerate(sorted(methods))}


ENDED_CLUSTER = "ended"  # the plane again, for Envoy's records of calls whose client went away (`ended_log`)


def plane_cluster(target: str, name: str = "processor") -> dict[str, Any]:
    """The comparison plane's processor, whose copies never push back on the clients' calls; `name`: the
    same plane under another name (`ENDED_CLUSTER`), whose streams stay out of the copies' counts."""
    out = cluster(name, target)
    out["per_connection_buffer_limit_bytes"] = _PLANE_BUFFER
    out["typed_extension_protocol_options"][_HTTP_OPTIONS]["explicit_http_config"] = {
        "http2_protocol_options": {
            **_STREAMS,
            "max_outbound_frames": _PLANE_FRAMES,
            "max_outbound_control_frames": _PLANE_CONTROL_FRAMES,
        }
    }
    return out


def _certificate(cert: bytes, key: bytes) -> dict[str, Any]:
    return {
        "certificate_chain": {"inline_string": cert.decode()},
        "private_key": {"inline_string": key.decode()},
    }


def _listener_tls(config: Config, folder: Path) -> dict[str, Any]:
    context: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "tls_certificate_sds_secret_configs": [_sds("listener", folder)],
    }
    tls: dict[str, Any] = {
        "@type": _TYPES + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": context,
    }
    if config.tls.client_ca:
        context["validation_context_sds_secret_config"] = _sds("listener-ca", folder)
        tls["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": tls}


def copying_filter(copy_close_timeout: float) -> dict[str, Any]:
    """The ext_proc filter that sends a copy of each call, every part of it, to the `processor` cluster."""
    return {
        "name": _EXT_PROC,
        "typed_config": {
            "@type": _TYPES + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "processor"}},
            "observability_mode": True,  # Envoy sends copies and never waits for an answer
            "failure_mode_allow": True,  # a processor that is down costs the client nothing
            "deferred_close_timeout": f"{copy_close_timeout:.3f}s",
            "stat_prefix": "mirror",
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "STREAMED",
                "response_body_mode": "STREAMED",
                "request_trailer_mode": "SEND",
                "response_trailer_mode": "SEND",
            },
        },
    }


def ended_log() -> dict[str, Any]:
    """Envoy's record of each call whose client went away before it ended (reset its stream: a cancel, a
    deadline; or closed its connection), sent to the plane at once: the copy of such a call never gets the
    primary's status, and Envoy holds it open until `deferred_close_timeout`. Through a cluster of its own:
    the `processor` cluster's requests count the copies' streams (`unseen.STREAMS`), which this long-lived
    stream must not join."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "filter": {"response_flag_filter": {"flags": ["DR", "DC"]}},
        "typed_config": {
            "@type": _TYPES + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": "shim-ended",
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": ENDED_CLUSTER}},
                "buffer_size_bytes": 0,  # each record sent as it is made, not batched
            },
        },
    }


def bootstrap(
    config: Config,
    *,
    routes_file: Path,
    python_target: str,
    processor_target: str,
    copy_close_timeout: float,
) -> dict[str, Any]:
    """Envoy's bootstrap: the clients' listener, the clusters, the routes' file, admin on a unix socket."""
    manager = {
        "@type": _TYPES + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "shim",
        "codec_type": "AUTO",
        "http2_protocol_options": dict(_STREAMS),
        "max_request_headers_kb": HEADERS_KB,
        "common_http_protocol_options": dict(_HEADERS_COUNT),
        "stream_idle_timeout": "0s",  # a quiet bidi stream lives as long as the client keeps it
        "request_timeout": "0s",
        "generate_request_id": False,
        "server_header_transformation": "PASS_THROUGH",
        "access_log": [ended_log()],
        "early_header_mutation_extensions": forwarded_proto.early_mutations(),
        "rds": {
            "route_config_name": ROUTE_NAME,
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": str(routes_file),
                    "watched_directory": {"path": str(routes_file.parent)},
                },
            },
        },
        "http_filters": [
            forwarded_proto.unmark(),  # a client's own x-forwarded-proto, and only that, goes on
            {  # the call's start, for the copy; the answer's time, which the copy has, taken off the client's
                # answer (the last to see it)
                "name": "envoy.filters.http.header_mutation",
                "typed_config": {
                    "@type": _TYPES + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                    "mutations": {
                        "request_mutations": [
                            {
                                "append": {
                                    "header": {"key": header, "value": value},
                                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                                }
                            }
                            for header, value in ((STARTED_HEADER, _STARTED), (PEER_HEADER, _PEER))
                        ],
                        "response_mutations": [{"remove": ANSWERED_HEADER}],
                    },
                },
            },
            copying_filter(copy_close_timeout),
            {  # the call's start, which the copy has, taken off the call before the primary
                "name": "envoy.filters.http.header_mutation",
                "typed_config": {
                    "@type": _TYPES + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                    "mutations": {"request_mutations": [{"remove": STARTED_HEADER}, {"remove": PEER_HEADER}]},
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": _TYPES + "envoy.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": True,
                },
            },
        ],
    }
    listener: dict[str, Any] = {
        "name": "clients",
        "address": _address(config.serving.listen),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
        ],
    }
    if config.tls.cert:
        listener["filter_chains"][0]["transport_socket"] = _listener_tls(config, routes_file.parent)
    clusters = [
        cluster("bank", config.bank.target, config.bank, routes_file.parent),
        cluster("python", python_target),
        plane_cluster(processor_target),
        plane_cluster(processor_target, ENDED_CLUSTER),
    ]
    if config.bk is not None:
        clusters.insert(1, cluster("bk", config.bk.target, config.bk, routes_file.parent))
    return {
        "node": {"id": "shim", "cluster": "shim"},  # file-based RDS needs a node
        # Envoy's admin interface takes no token: a unix socket in the shim's private folder (0700), itself
        # 0600, never a port any process of the machine could reach (`stamp` names one for each Envoy)
        "admin": {"address": {"pipe": {"path": str(routes_file.parent / ADMIN_SOCKET), "mode": 0o600}}},
        "static_resources": {"listeners": [listener], "clusters": clusters},
        # run-time values set through the admin interface: whether reads are shed (`SHED_KEY`)
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
        "overload_manager": {  # a bound on the clients' connections (Envoy warns without one)
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _TYPES + _CONNECTIONS_MONITOR,
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }


def route_table(
    entries: Sequence[RouteEntry], version: int, authorities: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The routes file: a discovery response holding one route configuration."""
    routes: list[dict[str, Any]] = []
    for entry in entries:
        if entry.path and not entry.prefix:
            match: dict[str, Any] = {"path": entry.path}
        else:
            match = {"prefix": entry.path or "/"}
        per_filter: dict[str, Any] = {
            "@type": _TYPES + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        }
        if entry.mirror:
            metadata = [{"key": ROUTE_HEADER, "value": entry.mirror}]
            if entry.path and not entry.prefix:
                metadata.append({"key": METHOD_HEADER, "value": entry.path})
            per_filter["overrides"] = {"grpc_initial_metadata": metadata}
        else:
            per_filter["disabled"] = True
        routes.append(
            {
                "match": match,
                # no route timeout, and the client's grpc-timeout left to the client and the primary, as
                # without the shim: Envoy enforcing it would answer with a reply of its own
                "route": {"cluster": entry.cluster, "timeout": "0s", **_host(entry.cluster, authorities)},
                "typed_per_filter_config": {_EXT_PROC: per_filter},
                # No headers taken off: Envoy's own x-forwarded-proto is kept out (`forwarded_proto`), and
                # the primary's `date` is left as it is (Envoy adds its own only to an answer that has
                # none, after the copy saw it; taking the primary's off had Envoy put its own in its place)
            }
        )
        if entry.mirror:  # when Envoy had the primary's answer: the copy's, never the client's
            routes[-1]["response_headers_to_add"] = [
                {
                    "header": {"key": ANSWERED_HEADER, "value": _ANSWERED},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ]
        if entry.shed_as:  # before it, the same route copying nothing, taken while `SHED_KEY` is 100
            shed = copy.deepcopy(routes[-1])
            shed["match"]["runtime_fraction"] = {
                "default_value": {"numerator": 0, "denominator": "HUNDRED"},
                "runtime_key": SHED_KEY,
            }
            shed["typed_per_filter_config"][_EXT_PROC] = {
                "@type": _TYPES + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "disabled": True,
            }
            shed.pop("response_headers_to_add", None)
            shed["stat_prefix"] = entry.shed_as  # its calls counted: vhost.all.route.<shed_as>.*
            routes.insert(len(routes) - 1, shed)
    configuration = {
        "@type": _TYPES + "envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_NAME,
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        **_versioned(version),
    }
    return {"version_info": str(version), "resources": [configuration]}


def _versioned(version: int) -> dict[str, Any]:
    """The routes' version in the route configuration itself, which no call is routed by: each file the
    shim writes differs from the one before. Envoy takes a configuration the same as the one it applies
    for no update, and keeps saying the old version (`Envoy.route_version`); a switch whose routes are those
    in force (its scopes through the shim already) would then wait for a version that never comes."""
    return {"metadata": {"filter_metadata": {"shim": {"routes_version": version}}}}


STOPPING = "the shim is stopping: the call was not sent on"


def refusing_table(version: int) -> dict[str, Any]:
    """The routes file of a stopping shim: Envoy answers every new call itself, UNAVAILABLE, sending it
    nowhere and copying nothing (the calls in flight keep the routes they started on)."""
    route = {
        "match": {"prefix": "/"},
        # a local reply to a gRPC call is gRPC's: HTTP 503 is UNAVAILABLE, the body its details
        "direct_response": {"status": 503, "body": {"inline_string": STOPPING}},
        "typed_per_filter_config": {
            _EXT_PROC: {
                "@type": _TYPES + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "disabled": True,
            }
        },
    }
    configuration = {
        "@type": _TYPES + "envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_NAME,
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}],
        **_versioned(version),
    }
    return {"version_info": str(version), "resources": [configuration]}


def stamp(path: Path, port: int, name: str) -> None:
    """Make the bootstrap at `path` ready for the Envoy about to start. A listener asked for on port 0 keeps
    `port`, the one Envoy bound first (0: none yet): the clients were told that one. And the copies' streams
    carry `name`, this Envoy's own (ENVOY_HEADER), so that the processor tells its copies from an earlier
    one's, whose counts died with it (`shim.dataplane.unseen`). Its admin socket is its own too
    (`admin-NAME.sock` beside the bootstrap): a new admin address tells the plane Envoy was started again."""
    bootstrap = json.loads(path.read_text(encoding="utf-8"))
    pipe = bootstrap.get("admin", {}).get("address", {}).get("pipe")
    if pipe is not None:
        pipe["path"] = str(path.with_name(f"admin-{name}.sock"))
    address = bootstrap["static_resources"]["listeners"][0]["address"].get("socket_address")
    if port and address is not None and address.get("port_value") == 0:
        address["port_value"] = port
    for service in _processor_services(bootstrap):
        others = [m for m in service.get("initial_metadata", ()) if m.get("key") != ENVOY_HEADER]
        service["initial_metadata"] = [*others, {"key": ENVOY_HEADER, "value": name}]
    write_atomically(path, bootstrap)


def _processor_services(node: Any) -> list[dict[str, Any]]:
    """The gRPC services in a bootstrap (or part of one) that reach the comparison plane's processor."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        service = node.get("grpc_service")
        if isinstance(service, dict) and service.get("envoy_grpc", {}).get("cluster_name") == "processor":
            found.append(service)
        for value in node.values():
            found += _processor_services(value)
    elif isinstance(node, list):
        for value in node:
            found += _processor_services(value)
    return found


def write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write `document` to `path` as JSON, renaming a whole file over it: Envoy reads the old or the new."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _host(cluster: str, authorities: Mapping[str, str] | None) -> dict[str, str]:
    """The upstream's own `:authority` (`targets.authority`), as grpc sends it, in place of the client's."""
    found = (authorities or {}).get(cluster)
    return {"host_rewrite_literal": found} if found else {}
