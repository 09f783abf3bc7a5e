"""`shim report`: the stored comparisons counted, per method, path and rule, in the terminal, as JSON or as
an HTML page (`shim.report`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shim import config as config_mod
from shim._noise import NoiseSettings
from shim.cli.store_args import evidence_settings, method_arg, positive, store_flags, time_of
from shim.errors import ConfigError, ShimError
from shim.gate import GateSettings
from shim.units import parse_duration, short

if TYPE_CHECKING:
    from shim.evidence import Report
    from shim.gate import GateResult
    from shim.store import Store


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    report = commands.add_parser("report", help="count the stored comparisons: per method, path and rule")
    store_flags(report)
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
        type=method_arg,
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
        type=positive,
        default=1000,
        help="the most calls --calls lists (default 1000)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from shim import report as render
    from shim.evidence import method_name
    from shim.terminal_text import printable_json

    report, gate = asyncio.run(_build_report(args))
    for name in dict.fromkeys(args.method or ()):  # a typo, or a short name, would report nothing silently
        if (found := report.method(method_name(name))) is None or not found.calls:
            print(
                f"shim: warning: --method {printable_json(json.dumps(name))} matches no stored comparison"
                ' (methods are named "package.Service/Method")',
                file=sys.stderr,
            )
    if args.html:  # written first: a path that cannot be written fails before anything is printed
        try:
            Path(args.html).write_text(render.html(report, *gate), encoding="utf-8")
        except OSError as exc:
            raise ShimError(f"cannot write {args.html}: {exc.strerror}") from exc
    if args.json:
        print(printable_json(json.dumps(render.to_json(report), indent=2, ensure_ascii=False)))
    else:
        render.terminal(report, Console(highlight=False, width=None if sys.stdout.isatty() else 200))
    if args.html:
        print(f"HTML report written to {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0


async def _gate_of(
    report: Report, store: Store, settings: dict[str, Any], now: float, whole: bool
) -> tuple[GateResult, str]:
    """`shim gate`'s verdict now, for the page: the evidence of the last `[gate] window` (every method),
    by the config's [gate] criteria (or the defaults), whatever the report's own window; `report` when it
    is that evidence (`whole`: every method, up to `now`, over the same window). And what it judged."""
    from shim.evidence import build_report, rfc3339
    from shim.gate import evaluate, evidence_since

    gate, noise = config_mod.section(settings, GateSettings), config_mod.section(settings, NoiseSettings)
    since = await evidence_since(store, gate.window, now)
    if not (whole and report.since == since and report.until == now):
        report = await build_report(
            store,
            since=since,
            until=now,
            relative=noise.relative,
            absolute=noise.absolute,
            min_sampled=noise.min_sampled,
        )
    result = evaluate(
        report,
        min_compared=gate.min_compared,
        min_answered=gate.min_answered,
        max_mismatch_rate=gate.max_mismatch_rate,
        max_unproven_rate=gate.max_unproven_rate,
        required_methods=gate.methods,
    )
    build = report.bk_build
    if since > now - gate.window and build is not None:
        judged = (
            f"the evidence since BK build {build.build} was declared, within the last {short(gate.window)}"
            f" ([gate] window), {rfc3339(since)} to {rfc3339(now)}"
        )
    else:
        window = f"the last {short(gate.window)} ([gate] window)"
        judged = f"the evidence of {window}, {rfc3339(since)} to {rfc3339(now)}"
    return result, judged


async def _build_report(
    args: argparse.Namespace,
) -> tuple[Report, tuple[GateResult, str] | tuple[()]]:
    """The report, and with --html the gate's verdict now and what it judged (`_gate_of`)."""
    import time

    from shim.evidence import build_report
    from shim.store import Store

    if args.until and not args.from_:
        raise ConfigError("--until goes with --from (or use --since DURATION)")
    url, settings = evidence_settings(args)
    now = time.time()
    if args.from_:
        since = time_of("--from", args.from_)
        until = time_of("--until", args.until) if args.until else now
        if not args.until and since > now:
            raise ConfigError(f"--from {args.from_} is in the future: nothing is stored after now")
        if until < since:
            raise ConfigError("--until is before --from")
    else:
        until = now
        since = now - parse_duration("--since", args.since or "24h")
    from shim.parts import load_registry

    registry = load_registry(settings.get("descriptor_sets", ()))
    noise = config_mod.section(settings, NoiseSettings)  # to show each example's request, if kept
    store = Store.open(url, create=False)
    await store.start()
    try:
        report = await build_report(
            store,
            since=since,
            until=until,
            methods=args.method or (),
            relative=noise.relative,
            absolute=noise.absolute,
            min_sampled=noise.min_sampled,
            calls=args.calls,
            limit=args.limit,
            registry=registry,
        )
        whole = not args.method and not args.from_
        gate = await _gate_of(report, store, settings, now, whole) if args.html else ()
    finally:
        await store.close()
    return report, gate
