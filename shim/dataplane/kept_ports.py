"""The ports a supervised comparison plane picked for itself (`metrics_listen` or `admin.listen` at port 0),
kept in the folder it shares with Envoy: a plane started again after a crash serves its metrics and its
admin API where the killed one did, as Envoy serves the clients on the same listener. A scrape target or
an operator's `shim mode --admin` address outlives the plane. A port taken meanwhile by another process
cannot be kept: the plane started again picks a new one, as at its first start, warns naming the address
it served on, and its ready line says which.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from shim.dataplane.envoy_config import write_atomically

if TYPE_CHECKING:
    from shim.config import Config

_log = structlog.get_logger("shim.dataplane")
KEPT = "ports.json"  # {"metrics": port, "admin": port}: those the first plane was given for port 0


def reuse(config: Config, folder: Path) -> Config:
    """`config`, with its port-0 addresses replaced by the ports a plane before this one served on."""
    kept: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((folder / KEPT).read_text(encoding="utf-8"))
        kept = loaded if isinstance(loaded, dict) else {}
    serving = replace(
        config.serving, metrics_listen=_kept(config.serving.metrics_listen, kept.get("metrics"), "metrics")
    )
    admin = replace(config.admin, listen=_kept(config.admin.listen, kept.get("admin"), "admin API"))
    return replace(config, serving=serving, admin=admin)


def as_running(new: Config, in_force: Config, running: Config) -> Config:
    """`new` (the config read again on SIGHUP), with its metrics and admin addresses, when the same as in
    force (`in_force`, port 0 say), those the plane serves on (`running`: a port kept from the plane before
    it): unchanged settings, not ones that changed and need a restart."""
    metrics = new.serving.metrics_listen
    if metrics == in_force.serving.metrics_listen:
        metrics = running.serving.metrics_listen
    admin = running.admin.listen if new.admin.listen == in_force.admin.listen else new.admin.listen
    return replace(
        new, serving=replace(new.serving, metrics_listen=metrics), admin=replace(new.admin, listen=admin)
    )


def keep(folder: Path, metrics: int | None, admin: int | None) -> None:
    """Record the ports this plane serves on, for the plane started after it."""
    write_atomically(folder / KEPT, {"metrics": metrics, "admin": admin})


def _kept(address: str, port: object, what: str) -> str:
    host, _, configured = address.rpartition(":")
    if configured != "0" or address.startswith("unix:") or not isinstance(port, int) or not 0 < port < 65536:
        return address  # a port of the config's own, none at all, or nothing kept
    candidate = f"{host}:{port}"
    if _free(host, port):
        return candidate
    _log.warning(  # a scrape target or an operator's --admin address moves: said, with where it was
        f"the {what} port the plane before served on is taken: this plane picks a new one (its ready line"
        " says which)",
        was=candidate,
    )
    return address


def _free(host: str, port: int) -> bool:
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
