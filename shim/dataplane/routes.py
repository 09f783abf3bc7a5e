"""The routes of each mode: where Envoy sends the calls of each method, and which are copied.

A method's calls go straight to the primary of its mode (`bank` or `bk`), copied to the processor
when the mode mirrors or the calls are recorded (`[record]`), unless they need Python on the primary
path (`python_reasons`): then they go to the shim's own server, which does what Python must. Health
checks always go there (the shim answers the overall one, and asks the primary for a named service's);
gRPC reflection goes there when the shim answers it (or when BK, with adapters in front, is the
primary), else to the primary, never copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from shim.dataplane.envoy_config import RouteEntry, shed_routes
from shim.modes import DEFAULT

if TYPE_CHECKING:
    from shim.app import Shim

_HEALTH = "/grpc.health.v1.Health/"
_REFLECTION = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
_PRIMARY = {"bank": "bank", "shadow": "bank", "bk-primary": "bk", "bk": "bk"}
_MIRROR = {"shadow": "bk", "bk-primary": "bank"}  # the dispatcher a copy goes to ("bk": BK is mirrored)
RECORD = "record:"  # a copy only recorded: "record:bank" (Bank answers), "record:bk"


def python_reasons(shim: Shim, method: str, mode: str) -> str:
    """Why calls of `method` ("": any method not named) in `mode` need Python on their primary path ("":
    they do not)."""
    plan, dispatchers = shim.parts.plans.of(method), shim.dispatchers
    if method and plan.write and plan.strict:
        return "strict ordering of the primary's writes"
    adapted = getattr(shim.bk_channel, "adapted", None)
    if mode in ("bk-primary", "bk") and adapted is not None and (not method or adapted(method)):
        return "an adapter"
    has_ids = bool(shim.config.ids or shim.config.key_aliases) and bool(dispatchers)
    if not has_ids:
        return ""
    if mode in ("bk-primary", "bk") and (not method or plan.ids.request):
        return "ids in its requests, translated for BK"
    # after a rollback, clients still hold BK's ids: they are translated back for Bank
    bk_ids = shim.bk_answered_before and (not method or plan.ids.request)
    if mode in ("bank", "shadow") and bk_ids:
        return "ids in its requests that BK minted before a rollback"
    return ""


def service_through_python(entries: Iterable[RouteEntry]) -> bool:
    """Whether calls of the service's methods go through Python on their primary path, by `entries`: then
    the comparison plane's event loop serves clients (health checks and reflection aside, which a late
    loop delays no more than a probe's timeout allows)."""
    own = (_HEALTH, *_REFLECTION)
    return any(entry.cluster == "python" and entry.path not in own for entry in entries)


def shedding_routes(shim: Shim) -> dict[str, str]:
    """The stat prefix of each read method's route while reads are shed at Envoy, by method (none when
    nothing is mirrored: `shim.dataplane.read_shedding`)."""
    if not shim.dispatchers or shim.registry is None:
        return {}
    return shed_routes(m for m in shim.registry.methods if not shim.parts.plans.of(m).write)


def _entry(
    shim: Shim, path: str, mode: str, prefix: bool = False, shedding: Mapping[str, str] = {}
) -> RouteEntry:
    why = python_reasons(shim, path, mode)
    if why:
        return RouteEntry(path, "python", prefix=prefix, why=why)
    mirror = _MIRROR.get(mode, "") if shim.dispatchers else ""
    shed_as = shedding.get(path, "") if mirror else ""
    if not mirror and shim.recorder is not None:  # copied to be recorded, never mirrored
        mirror = RECORD + _PRIMARY[mode]
    return RouteEntry(path, _PRIMARY[mode], mirror=mirror, prefix=prefix, shed_as=shed_as)


def plan(
    shim: Shim, table: Mapping[str, str], through_python: frozenset[str] = frozenset()
) -> list[RouteEntry]:
    """The routes for the modes in `table` (scope: mode); scopes in `through_python` go to Python."""
    default = table[DEFAULT]
    shedding = shedding_routes(shim)
    # health: the overall check the shim's, a named service's the primary's (asked by Python), never copied
    entries = [RouteEntry(_HEALTH, "python", prefix=True)]
    # a BK with adapters in front has an interface of its own: while it answers, the shim's descriptors do
    adapted_bk = bool(shim.parts.adapters) and _PRIMARY[default] == "bk"
    for service in _REFLECTION:
        if shim.config.descriptors.reflection == "shim" or adapted_bk:
            entries.append(RouteEntry(service, "python", prefix=True))
        else:  # the primary's own answer, never mirrored
            entries.append(RouteEntry(service, _PRIMARY[default], prefix=True))
    methods = set(shim.registry.methods) if shim.registry is not None else set()
    methods.update(scope for scope in table if scope != DEFAULT)
    for method in sorted(methods):
        mode = table.get(method, default)
        if method in through_python or (DEFAULT in through_python and method not in table):
            entries.append(RouteEntry(method, "python"))
        else:
            entries.append(_entry(shim, method, mode, shedding=shedding))
    if DEFAULT in through_python:
        entries.append(RouteEntry("", "python"))
    else:
        entries.append(_entry(shim, "", default))
    return entries
