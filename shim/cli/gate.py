"""`shim gate`: the stored evidence judged by the [gate] criteria; exit 0 when it meets them, 1 when not."""

from __future__ import annotations

import argparse
from typing import Any

from shim import config as config_mod
from shim._noise import NoiseSettings
from shim.cli.store_args import evidence_settings, method_arg, positive, share, store_flags
from shim.gate import GateSettings
from shim.store_settings import StoreSettings
from shim.units import parse_duration


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    gate = commands.add_parser(
        "gate",
        help="exit 0 when the stored evidence meets the [gate] criteria, 1 when it does not",
        description="Judges each method on four criteria: at least --min-compared clean comparisons"
        " (verdict match or mismatch), at least --min-answered of them answered by Bank (status OK: the same"
        " refusal on both sides is a match that shows nothing of the method's work), real mismatches at most"
        " --max-mismatch-rate of them, and at most --max-unproven-rate of its calls unproven (tainted,"
        " skipped, shadow-error, error, or dropped: counted and never stored). A method short of clean or"
        ' answered comparisons, or with too many unproven calls, is "not proven". Live replicas of the store'
        " that run different modes fail it too. Exit 0 when every criterion passes, 1 when one fails, 2 for"
        " a bad flag or a store that cannot be read.",
    )
    store_flags(gate)
    gate.add_argument(
        "--window", metavar="DURATION", help="the evidence of the last DURATION ([gate] window)"
    )
    gate.add_argument(
        "--min-compared",
        metavar="N",
        type=positive,
        help="clean comparisons (match or mismatch) each method needs ([gate] min_compared)",
    )
    gate.add_argument(
        "--min-answered",
        metavar="N",
        type=positive,
        help="clean comparisons Bank answered (status OK) each method needs, no more than --min-compared"
        " ([gate] min_answered)",
    )
    gate.add_argument(
        "--max-mismatch-rate",
        metavar="R",
        type=share,
        help="real mismatches / clean comparisons allowed, e.g. 0.001 ([gate] max_mismatch_rate)",
    )
    gate.add_argument(
        "--max-unproven-rate",
        metavar="R",
        type=share,
        help="share of a method's calls allowed to be tainted, skipped, shadow-error, error or dropped"
        " (counted, never stored), e.g. 0.01 ([gate] max_unproven_rate)",
    )
    gate.add_argument(
        "--require-method",
        metavar="M",
        action="append",
        type=method_arg,
        default=None,
        help='a method that must be covered, "package.Service/Method"; repeatable ([gate] methods); a name'
        " that is no method called or described fails as not covered, said with the methods it may mean",
    )


async def run(args: argparse.Namespace) -> int:
    import time

    from shim.evidence import build_report, rfc3339
    from shim.gate import evaluate, evidence_since, one_sided_since, split_fleet
    from shim.liveness import lease_of
    from shim.store import Store
    from shim.terminal_text import printable

    url, settings = evidence_settings(args)
    gate, noise = config_mod.section(settings, GateSettings), config_mod.section(settings, NoiseSettings)
    kept = config_mod.section(settings, StoreSettings)
    window = parse_duration("--window", args.window) if args.window else gate.window
    min_compared = gate.min_compared if args.min_compared is None else args.min_compared
    min_answered = gate.min_answered if args.min_answered is None else args.min_answered
    max_rate = gate.max_mismatch_rate if args.max_mismatch_rate is None else args.max_mismatch_rate
    max_unproven = gate.max_unproven_rate if args.max_unproven_rate is None else args.max_unproven_rate
    # the flag's methods add to the config's; every method in the window is judged either way
    required = [*gate.methods, *(args.require_method or ())]
    until = time.time()
    store = Store.open(url, create=False)
    await store.start()
    try:
        unmirrored = await one_sided_since(store, float("inf"))  # (one stamped after now: clocks disagree)
        latest_build = await store.builds.in_service(float("inf"))
        judging = await store.judging.changed()
        modes = await store.modes.current()
        split = split_fleet(await store.fleet.views(), lease_of(max(kept.refresh, 0.05), kept.lease), until)
        report = await build_report(
            store,
            since=await evidence_since(store, window, until),
            until=until,
            relative=noise.relative,
            absolute=noise.absolute,
            min_sampled=noise.min_sampled,
            latencies=False,  # the gate judges counts
        )
    finally:
        await store.close()
    result = evaluate(
        report,
        min_compared=min_compared,
        min_answered=min_answered,
        max_mismatch_rate=max_rate,
        max_unproven_rate=max_unproven,
        required_methods=required,
    )
    print(
        f"gate: evidence from {rfc3339(report.since)} to {rfc3339(report.until)} ({printable(report.store)})"
    )
    build = report.bk_build
    if build is not None and build.at >= until - window:  # stored text: control characters escaped
        print(
            f"gate: BK build {printable(build.build)} declared {rfc3339(build.at)} by {printable(build.who)}:"
            " the evidence from before it is not judged"
        )
    if latest_build is not None and latest_build.at > until:
        print(
            f"gate: BK build {printable(latest_build.build)} declared {rfc3339(latest_build.at)}, after now"
            " by this host's clock: the clocks disagree, and no evidence is judged"
        )
    if judging is not None and judging[0] >= until - window and min(judging[0], until) == report.since:
        ahead = " (after now by this host's clock: the clocks disagree)" if judging[0] > until else ""
        print(
            f"gate: the rules that judge the comparisons changed at {rfc3339(judging[0])}{ahead}, on"
            f" {printable(judging[1])}: the evidence from before it is not judged"
        )
    if unmirrored is not None and unmirrored >= until - window and min(unmirrored, until) == report.since:
        ahead = " (after now by this host's clock: the clocks disagree)" if unmirrored > until else ""
        print(
            f"gate: a switch into or out of bank or bk mode at {rfc3339(unmirrored)}{ahead} (one side is sent"
            " no write in it): the evidence from before it is not judged"
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
    from shim.admin import following_the_default
    from shim.parts import load_registry

    registry = load_registry(settings.get("descriptor_sets", ()))
    judged = {c.method for c in result.criteria}
    # a method with a mode of its own is not moved by a promotion of the default mode: not named here
    idle = [m for m in following_the_default(registry, modes, ()) if m not in judged]
    known = {m.method for m in report.methods} | {
        p.lstrip("/") for p in (registry.methods if registry else ())
    }
    for name in dict.fromkeys(required):  # a short name, or a typo, is not covered: say which it is
        if name not in known:
            like = sorted(m for m in known if m.endswith("." + name) or m.rpartition("/")[2] == name)
            hint = f": did you mean {', '.join(map(printable, like))}?" if like else ""
            named = f"gate: {printable(name)} names no method called or described{hint}"
            print(f'{named} ("package.Service/Method")')
    if idle:  # what a promotion of the default mode would also judge, and find not covered
        print(
            f"gate: {len(idle)} methods of the descriptors have no call in the window: {', '.join(idle)};"
            " promoting the default mode is refused until each is covered or has a mode of its own"
        )
    if split:  # stored text: control characters escaped
        print(f"gate: fleet: live replicas run different modes: {printable(split)}")
    failed = len(result.failed) + bool(split)
    total = len(result.criteria) + bool(split)
    if result.passed and not split:
        print(f"gate: PASS (all {len(result.criteria)} criteria met)")
        return 0
    print(f"gate: FAIL ({failed} of {total} criteria not met)")
    return 1
