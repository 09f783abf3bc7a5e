"""The `shim` command.

    shim serve --listen HOST:PORT --bank HOST:PORT --bk HOST:PORT --mode bank|shadow
               [--config FILE] [--descriptor-set FILE ...] [--descriptor-source files|reflection]
               [--rules FILE ...] [--diff-log FILE] [--store URL]
    shim resync [--config FILE | --store URL] [--list] [KEY ...]
    shim demo [ARGS ...]

Exit status: 0 after a clean stop, 2 for a bad flag, an unreadable or invalid
config, or a port that is busy; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, NoReturn, TextIO

# grpc's C core logs its own view of errors (e.g. a busy port) on stderr; the
# shim reports them itself, in one line. GRPC_VERBOSITY set by the user wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from shim import config as config_mod
from shim.errors import ConfigError, ShimError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"shim: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shim", description="A shadow-traffic compatibility layer for gRPC services.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", help="serve Bank's interface, forward to the primary, mirror to the shadow"
    )
    serve.add_argument("--config", metavar="FILE", help="TOML config file (flags override it)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (port 0: any free port)")
    serve.add_argument("--bank", metavar="HOST:PORT", help="Bank, the legacy service")
    serve.add_argument("--bk", metavar="HOST:PORT", help="BK, the new service")
    serve.add_argument(
        "--mode", choices=config_mod.MODES, help="bank: forward only; shadow: forward and mirror"
    )
    serve.add_argument(
        "--descriptor-set",
        metavar="FILE",
        action="append",
        default=None,
        help="FileDescriptorSet (protoc --include_imports --descriptor_set_out); repeatable",
    )
    serve.add_argument(
        "--descriptor-source",
        choices=config_mod.DESCRIPTOR_SOURCES,
        help="reflection: ask Bank for its descriptors by gRPC server reflection at start "
        "(--descriptor-set files are added too); files: only the files (the default)",
    )
    serve.add_argument(
        "--rules",
        metavar="FILE",
        action="append",
        default=None,
        help="TOML file of [[rules]] tables (added after the config's own rules); repeatable",
    )
    serve.add_argument(
        "--diff-log", metavar="FILE", help='where difference lines go ("-": stdout, the default)'
    )
    serve.add_argument(
        "--shadow-timeout", metavar="DURATION", help="how long the shadow may take after the primary"
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help='id pairs and keys out of step: a SQLite file (default "shim.db"), ":memory:", '
        "or postgresql://... shared by a fleet of replicas",
    )

    resync = commands.add_parser(
        "resync",
        help="list the keys out of step, or mark keys in step again once BK has been brought in line",
    )
    resync.add_argument("--config", metavar="FILE", help="the shim's config file (for its [store])")
    resync.add_argument("--store", metavar="URL", help="the store (overrides the config's)")
    resync.add_argument(
        "--list", action="store_true", help="list the keys out of step (the default without KEY)"
    )
    resync.add_argument(
        "keys", nargs="*", metavar="KEY", help='routing keys to resync ("*": the every-key mark)'
    )

    demo = commands.add_parser(
        "demo", help="run the bundled demo (sample Bank, BK and the shim)", add_help=False
    )
    demo.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _settings(args: argparse.Namespace) -> config_mod.Config:
    settings: dict[str, Any] = config_mod.load_file(args.config) if args.config else {}
    if args.listen:
        settings["listen"] = args.listen
    if args.mode:
        settings["mode"] = args.mode
    if args.descriptor_set:
        settings["descriptor_sets"] = tuple(args.descriptor_set)
    if args.descriptor_source:
        settings["descriptor_source"] = args.descriptor_source
    for rules_file in args.rules or ():
        rules, locations = config_mod.load_rules_file(rules_file)
        settings["rules"] = (*settings.get("rules", ()), *rules)
        settings["rule_locations"] = (*settings.get("rule_locations", ()), *locations)
    if args.diff_log:
        settings["diff_log"] = args.diff_log
    if args.store:
        settings["store"] = args.store
    shadow_timeout = (
        config_mod.parse_duration("--shadow-timeout", args.shadow_timeout) if args.shadow_timeout else None
    )
    for name in ("bank", "bk"):
        target = getattr(args, name)
        current = settings.get(name)
        if target:
            timeout = current.timeout if current is not None else 2.0
            settings[name] = config_mod.Upstream(name=name, target=target, timeout=timeout)
    if shadow_timeout is not None and settings.get("bk") is not None:
        bk = settings["bk"]
        settings["bk"] = config_mod.Upstream(name=bk.name, target=bk.target, timeout=shadow_timeout)
    return config_mod.build(settings)


def _open_diff_log(path: str) -> TextIO:
    if path == "-":
        return sys.stdout
    try:
        return open(path, "a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise ConfigError(f"cannot open diff log {path}: {exc.strerror}") from exc


async def _serve(config: config_mod.Config) -> int:
    import structlog

    from shim import logs
    from shim.app import Shim
    from shim.reflection import resolve_registry
    from shim.sinks import DiffLog

    logs.configure()
    log = structlog.get_logger("shim")
    registry = await resolve_registry(config)  # before the diff log: a bad set leaves no file
    diff_stream = _open_diff_log(config.diff_log)
    shim = Shim(config, sinks=[DiffLog(diff_stream)], registry=registry)
    await shim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            os._exit(128 + signum)  # a second signal: leave at once
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    log.info(
        "ready",
        listen=shim.address,
        mode=config.mode,
        bank=config.bank.target,
        bk=config.bk.target if config.bk else None,
        descriptor_sets=list(config.descriptor_sets),
        descriptor_source=config.descriptor_source,
        methods_described=len(shim.registry.methods) if shim.registry else 0,
        store=shim.store.url if shim.store else None,
        keys_out_of_step=len(shim.steps.keys) if shim.steps else 0,
        id_pairs_loaded=len(shim.ids) if shim.ids else 0,
    )

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
    log.info("stopping", grace_period=config.grace_period)
    await shim.stop()
    log.info("stopped", calls=shim.counters.get("calls"))
    if diff_stream is not sys.stdout:
        diff_stream.close()
    return 0


async def _resync(args: argparse.Namespace) -> int:
    import time

    from shim.store import Store

    url = args.store
    if url is None:
        settings: dict[str, Any] = config_mod.load_file(args.config) if args.config else {}
        url = settings.get("store", config_mod.Config.__dataclass_fields__["store"].default)
    store = Store.open(url)
    await store.start()
    try:
        if args.keys and not args.list:
            done = set(await store.resync(args.keys))
            for key in args.keys:
                print(f"{key}: in step again" if key in done else f"{key}: was not out of step")
            return 0
        marks = await store.out_of_step()
        if not marks:
            print(f"no key is out of step ({store.url})")
        for mark in marks:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mark.since))
            print(f"{mark.key}\tsince {when}\t{mark.method.lstrip('/')}: {mark.reason}")
        return 0
    finally:
        await store.close()


def _demo(args: Sequence[str]) -> int:
    demos = {ep.name: ep for ep in entry_points(group="shim.demos")}
    if not demos:
        print("shim: error: no demo is installed (the sample-ledger package provides one)", file=sys.stderr)
        return EXIT_USAGE
    name = args[0] if args and args[0] in demos else next(iter(sorted(demos)))
    rest = list(args[1:]) if args and args[0] in demos else list(args)
    main = demos[name].load()
    return int(main(rest) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own flags
        return _demo(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args.args)
        if args.command == "resync":
            return asyncio.run(_resync(args))
        config = _settings(args)
        return asyncio.run(_serve(config))
    except ShimError as exc:
        print(f"shim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
