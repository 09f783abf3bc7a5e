"""`shim serve`: the config from the file and flags, and the shim serving until it is told to stop."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from shim import _hangups
from shim import config as config_mod
from shim.errors import ConfigError, NeedsDescriptors, ShimError
from shim.modes import DEFAULT
from shim.store_settings import parse_retain
from shim.tls_settings import NAMES as TLS_NAMES
from shim.tls_settings import taken_live
from shim.units import parse_duration


def settings_of(args: argparse.Namespace) -> config_mod.Config:
    """The config `shim serve ARGS` runs with: the config file, overridden by the flags."""
    settings: dict[str, Any] = config_mod.load_file(args.config) if args.config else {}
    if args.listen:
        settings["listen"] = args.listen
    if args.mode:
        settings["mode"] = args.mode
    if args.force:
        settings = config_mod.merged(settings, {"serving": {"forced_start": True}})
    if args.adapters:
        settings["adapters"] = args.adapters
    if args.descriptor_set:
        settings["descriptor_sets"] = tuple(args.descriptor_set)
    if args.descriptor_source:
        settings["descriptor_source"] = args.descriptor_source
    if args.reflection:
        settings["reflection"] = args.reflection
    for rules_file in args.rules or ():
        rules, locations = config_mod.load_rules_file(rules_file)
        settings["rules"] = (*settings.get("rules", ()), *rules)
        settings["rule_locations"] = (*settings.get("rule_locations", ()), *locations)
    if args.diff_log:
        settings = config_mod.merged(settings, {"diff_log": {"path": args.diff_log}})
    if args.store:
        settings = config_mod.merged(settings, {"store": {"url": args.store}})
    if args.retain:
        settings = config_mod.merged(settings, {"store": {"retain": parse_retain("--retain", args.retain)}})
    if args.record == "store":  # into the evidence store (a file named so: ./store)
        settings = config_mod.merged(settings, {"record": {"into": "store", "path": ""}})
    elif args.record:
        settings = config_mod.merged(settings, {"record": {"into": "file", "path": args.record}})
    if args.workers:
        settings["workers"] = args.workers
    if args.dataplane:
        settings["dataplane"] = args.dataplane
    if args.metrics:
        settings["metrics_listen"] = args.metrics
    shadow_timeout = parse_duration("--shadow-timeout", args.shadow_timeout) if args.shadow_timeout else None
    for name in ("bank", "bk"):  # the target alone: the file's timeout and TLS settings still hold
        if target := getattr(args, name):
            current = settings.get(name)
            settings[name] = replace(current, target=target) if current else config_mod.Upstream(name, target)
    if shadow_timeout is not None and settings.get("bk") is not None:
        settings["bk"] = replace(settings["bk"], timeout=shadow_timeout)
    return config_mod.build(settings)


def run(main: Coroutine[Any, Any, int], event_loop: str) -> int:
    """Run the shim's event loop: uvloop ("auto": when it is installed; its loop makes the calls the
    shim forwards cheaper, see the docs' performance page), or asyncio's own."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                raise ConfigError("event_loop: uvloop is not installed (pip install uvloop)") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def _open_diff_log(path: str) -> TextIO:
    if path == "-":
        return sys.stdout
    try:
        return open(path, "a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise ConfigError(f"cannot open diff log {path}: {exc.strerror}") from exc


async def serve(
    config: config_mod.Config,
    ready: Callable[[], object] | None = None,
    reread: Callable[[], config_mod.Config] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; `ready` is called once the shim serves. On SIGHUP the TLS files
    are read again, and the config too with `reread` (the config file and flags, as at start); a SIGHUP
    recorded while it started (`shim._hangups`) is applied once it serves."""
    import structlog

    from shim import dataplane, logs
    from shim.dataplane import in_force, kept_ports
    from shim.reflection import resolve_registry
    from shim.sinks import DiffLog

    logs.configure()
    log = structlog.get_logger("shim")
    no_descriptors: list[str] = []  # why Bank's reflection gave none ("auto"), told once the shim serves
    registry = await resolve_registry(config, on_none=no_descriptors.append)  # a bad set leaves no diff log
    diff_stream = _open_diff_log(config.diff_log.path)
    from shim.dataplane.supervisor import PLANE_ENV

    # run by `shim serve`'s supervisor, beside its Envoy: the folder they share
    attached = Path(os.environ[PLANE_ENV]) if PLANE_ENV in os.environ else None
    loop = asyncio.get_running_loop()
    # a signal while the shim starts stops the start, which undoes what it started (the comparison
    # processes and their queues included): it leaves nothing behind, and says nothing of it
    starting = loop.create_task(dataplane.start(config, [DiffLog(diff_stream)], registry, attached=attached))
    stop_asked = False  # a stop came while it started: kept, should the start end before it takes hold

    def stop_start() -> None:
        nonlocal stop_asked
        stop_asked = True
        starting.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_start)
    try:
        served = await starting
    except asyncio.CancelledError:
        if not starting.cancelled():
            raise
        if _hangups.take():
            log.info("a SIGHUP came while the shim started; not applied: it stopped before it served")
        return 0  # stopped as asked, before it served
    except NeedsDescriptors as exc:  # with none given, they were asked of Bank: say why it gave none
        if not no_descriptors:
            raise
        raise ConfigError(
            f"{exc}; none were given, so they were asked of Bank by gRPC reflection, and Bank served none:"
            f" {no_descriptors[0]}"
        ) from exc
    shim = served.shim
    public = config  # the config in force, as the clients' side sees it (reloads applied)
    if served.why:
        log.warning("data plane: python", why=served.why)
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            os._exit(128 + signum)  # a second signal: leave at once
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if stop_asked:  # a stop that came as the start ended (the task done, or its cancel not taken): it stops
        log.info("a stop came while the shim started; it stops now that it serves")
        on_signal(signal.SIGTERM)

    async def reload() -> None:
        nonlocal public
        new: config_mod.Config | None = None  # the config read again, once the shim applied it
        refused = ""  # why it was not
        restart: list[str] = []  # the settings it changed that need a restart (they keep their values)
        if reread is not None:
            try:
                new = reread()
                inner = new
                if served.plane is not None:  # the ports a plane started again kept are the file's port 0
                    inner = dataplane.inner_config(kept_ports.as_running(new, public, shim.config), attached)
                restart = shim.reconfigure(inner)
            except ShimError as exc:
                new, refused = None, str(exc)
            except Exception as exc:
                new, refused = None, f"unexpected error: {exc!r}"
        # the listener's files: those the config read again names, where a running listener can take them
        tls = new.tls if new is not None and taken_live(public.tls, new.tls) else public.tls
        try:
            errors = await shim.reload_certificates(tls)
            if served.plane is not None:
                errors += await served.plane.reload_certificates(tls)
        except Exception as exc:  # never a task's unretrieved exception; the config is applied still
            errors = [f"unexpected error: {exc!r}"]
        for error in errors:
            log.error("certificate not reloaded; the one in use stays", error=error)
        if not errors and (tls.cert or any(u is not None and u.tls for u in (public.bank, public.bk))):
            log.info("certificates reloaded")
        if reread is None:
            return
        if new is None:
            log.error("config not reloaded; the one in use stays", error=refused)
            return
        live = config_mod.reloadable()
        if not taken_live(public.tls, new.tls):
            live -= set(TLS_NAMES)
        # the listener's settings too, which the inner config (behind Envoy) cannot name
        restart += [n for n in config_mod.changed(public, new) if n not in live and n not in restart]
        # files not taken stay named as they were, read again on the next SIGHUP
        kept = [*restart, *(TLS_NAMES if errors else ())]
        public = config_mod.keeping(
            public, new, [n for n in config_mod.changed(public, new) if n not in kept]
        )
        if attached is not None:  # a plane started again runs on what this one now runs on
            try:
                in_force.keep(attached, public)
            except OSError as exc:
                log.error("the reloaded config could not be kept for a plane started again", error=str(exc))
        if restart:
            log.warning(
                "config reloaded; these changed settings need a restart and keep their values",
                settings=restart,
            )
        else:
            log.info("config reloaded")

    reloads: set[asyncio.Task[None]] = set()

    def on_hangup() -> None:
        task = loop.create_task(reload(), name="certificate reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if _hangups.take():  # recorded while the shim started (`shim._hangups`): applied now that it serves
        log.info("a SIGHUP came while the shim started; applied now that it serves")
        on_hangup()
    shim.parts.warn_of_a_random_key()
    log.info(
        "ready",
        listen=shim.address,
        dataplane=served.dataplane,
        pid=os.getpid(),
        replica=shim.parts.replica,  # its name in the store and the fleet
        comparison_nice=served.plane.niced if served.plane is not None else None,
        # on Envoy: the methods whose calls take Python on their primary path, and why (docs/dataplane.md)
        through_python={r.path: r.why for r in served.plane.routes if r.why}
        if served.plane is not None
        else None,
        mode=shim.modes.default,  # the store's, where it keeps one: a restart serves as it was told last
        method_modes={k: v for k, v in shim.modes.table().items() if k != DEFAULT} or None,
        bank=config.bank.target,
        bk=config.bk.target if config.bk else None,
        descriptor_sets=list(config.descriptors.descriptor_sets),
        descriptor_source=config.descriptors.descriptor_source,
        methods_described=len(shim.registry.methods) if shim.registry else 0,
        # with none: why, and what it means (compared byte for byte, every method a write with no key)
        no_descriptors=f"{no_descriptors[0]}; answers are compared byte for byte (docs/your-service.md)"
        if no_descriptors
        else None,
        methods_keyed=shim.parts.plans.keyed(),
        serialized=shim.parts.plans.serialized() if config.bk else None,
        tls=bool(config.tls.cert),
        client_certificates=bool(config.tls.cert and config.tls.client_ca),
        store=shim.store.url if shim.store else None,
        keys_out_of_step=len(shim.steps.keys) if shim.steps else 0,
        id_pairs_loaded=len(shim.ids) if shim.ids else 0,
        event_loop="uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
        admin=shim.admin_address or None,
        metrics=f"{config.serving.metrics_listen.rpartition(':')[0]}:{shim.exporter.port}"
        if shim.exporter
        else None,
    )
    if ready is not None:
        ready()

    async def warn_unreachable() -> None:
        for upstream in await shim.unreachable_upstreams():
            log.warning(
                "upstream not reachable",
                upstream=upstream.name,
                target=upstream.target,
                consequence="calls to it fail with UNAVAILABLE until it is; the shim keeps trying"
                if upstream.name == config.bank.name
                else "mirrored calls are recorded as shadow errors until it is; the shim keeps trying",
            )

    check = loop.create_task(warn_unreachable(), name="upstream reachability check")
    await stop.wait()
    check.cancel()
    log.info("stopping", grace_period=config.serving.grace_period)
    await shim.stop()
    log.info("stopped", calls=shim.counters.get("calls"))
    if diff_stream is not sys.stdout:
        diff_stream.close()
    return 0
