"""`shim report` in the terminal: rich tables. Stored text is shown as text, its control characters
escaped (`shim.terminal_text`): a method name cannot drive the terminal."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from shim.evidence import CallRecord, PathStat, Report, rfc3339
from shim.report.text import code, millis, percent, value_text
from shim.terminal_text import cell, printable

TOP_PATHS = 10  # paths per method in the terminal, unless more of them are real (each real one is shown)
_EXAMPLE_WIDTH = 40  # characters of an example value in the terminal


def terminal(report: Report, console: Console) -> None:
    """Print the report as tables. What the store holds (methods, paths, values, keys, reasons) is shown
    as text, never read as markup, with its control characters escaped (`shim.terminal_text`)."""
    console.print(
        Text.assemble(
            (f"Evidence from {rfc3339(report.since)} to {rfc3339(report.until)}", "bold"),
            " (",
            cell(report.store),
            ")",
        )
    )
    build = report.bk_build
    if build is not None:
        console.print(
            Text.assemble(
                "BK build in service: ",
                cell(build.build),
                f", declared {rfc3339(build.at)} by ",
                cell(build.who),
                " (",
                cell(build.reason),
                "). The gate judges no evidence from before it.",
            )
        )
    if not report.methods:
        console.print("No comparison is stored in this window.")
        return
    names = short_names([m.method for m in report.methods])
    packages = sorted(
        {m.method.partition("/")[0].rpartition(".")[0] for m in report.methods if names[m.method] != m.method}
    )
    if packages:
        console.print(
            f"Methods are named without their package ({', '.join(packages)}) where that is unambiguous."
        )
    summary = _table(
        "Per method",
        ("method", "calls", "compared", "answered", "matched", "real mismatches", "unproven", "tolerated"),
    )
    for m in report.methods:
        real = f"{m.real_mismatches:,} ({percent(m.real_mismatch_rate)})"
        unproven = f"{m.unproven:,} ({percent(m.unproven_rate)})"
        summary.add_row(
            cell(names[m.method]),
            f"{m.calls:,}",
            f"{m.compared:,}",
            f"[yellow]{m.answered:,}[/]" if m.compared and not m.answered else f"{m.answered:,}",
            f"{m.matched:,} ({percent(m.matched_rate)})",
            f"[red]{real}[/]" if m.real_mismatches else real,
            f"[yellow]{unproven}[/]" if m.unproven else unproven,
            f"{m.tolerated:,}",
        )
    console.print(summary)
    rest = _table(
        "Per method: unproven calls, noise and latency",
        (
            "method",
            "tainted",
            "shadow errors",
            "skipped",
            "errors",
            "dropped",
            "noise",
            "Bank p50/p99 ms",
            "BK p50/p99 ms",
        ),
    )
    for m in report.methods:
        rest.add_row(
            cell(names[m.method]),
            f"{m.tainted:,}",
            f"{m.shadow_errors:,}",
            f"{m.skipped:,}",
            f"[red]{m.errors:,}[/]" if m.errors else "0",
            f"[yellow]{m.dropped:,}[/]" if m.dropped else "0",
            f"{m.noise_mismatches:,}",
            f"{millis(m.bank_latency.p50)} / {millis(m.bank_latency.p99)}",
            f"{millis(m.bk_latency.p50)} / {millis(m.bk_latency.p99)}",
        )
    console.print(rest)
    _terminal_fleet(report, names, console)

    codes = _table("Status codes, Bank → BK", ("method", "Bank", "BK", "calls"))
    for m in report.methods:
        for pair in m.codes:
            codes.add_row(
                cell(names[m.method]), cell(code(pair.bank)), cell(code(pair.bk)), f"{pair.count:,}"
            )
    console.print(codes)

    console.print(
        f"Noise: a path is noise when Bank differs from itself there and BK is not above Bank's rate by"
        f" more than {percent(report.relative)} of it and {percent(report.absolute)} of compared calls;"
        f" Bank's rates count once {report.min_sampled:,} of a method's calls"
        " (at a header, of its service's calls) were asked twice.",
        highlight=False,
    )
    if any(m.paths for m in report.methods):
        paths = _table(
            "Differing paths (real differences of mismatched calls)",
            ("method", "path", "calls", "BK rate", "noise rate", "class", "example, Bank → BK"),
        )
        for m in report.methods:
            twice = {p.path for p in m.paths if sum(q.path == p.path for q in m.paths) > 1}
            shown, hidden = _shown_paths(m.paths)
            for p in shown:
                paths.add_row(
                    cell(names[m.method]),
                    cell(
                        f"{p.path} ({p.kind})" if p.path in twice else p.path
                    ),  # a row per kind of difference
                    f"{p.calls:,}",
                    percent(p.bk_rate),
                    _noise_rate(p, report.min_sampled),
                    "[red]real[/]" if p.classification == "real" else "noise",
                    cell(
                        f"{value_text(p.example_bank, _EXAMPLE_WIDTH)}"
                        f" → {value_text(p.example_bk, _EXAMPLE_WIDTH)}"
                    ),
                )
            if hidden:
                paths.add_row(cell(names[m.method]), f"… {hidden} more noise paths (--json lists them all)")
        console.print(paths)
    else:
        console.print("No real difference in a mismatched call.")
    if any(m.tainted_paths for m in report.methods):
        tainted = _table(
            "Differing paths of tainted calls (real differences on keys out of step)",
            ("method", "path", "calls", "example, Bank → BK"),
        )
        for m in report.methods:
            for t in m.tainted_paths[:TOP_PATHS]:
                tainted.add_row(
                    cell(names[m.method]),
                    cell(t.path),
                    f"{t.calls:,}",
                    cell(
                        f"{value_text(t.example_bank, _EXAMPLE_WIDTH)}"
                        f" → {value_text(t.example_bk, _EXAMPLE_WIDTH)}"
                    ),
                )
            if len(m.tainted_paths) > TOP_PATHS:
                tainted.add_row(
                    cell(names[m.method]),
                    f"… {len(m.tainted_paths) - TOP_PATHS} more (--json lists them all)",
                )
        console.print(tainted)

    if any(m.tolerated_by_rule for m in report.methods):
        rules = _table("Tolerated, by rule (calls)", ("method", "rule", "calls"))
        for m in report.methods:
            for rule, count in m.tolerated_by_rule:
                rules.add_row(cell(names[m.method]), cell(rule), f"{count:,}")
        console.print(rules)

    if report.calls is not None:
        _terminal_calls(report, console)


def _shown_paths(paths: Sequence[PathStat]) -> tuple[list[PathStat], int]:
    """A method's paths as the terminal lists them: every real one first (a noise path in every call must
    never push out the one where BK is wrong), then the noise ones, up to `TOP_PATHS` in all, most calls
    first; and how many noise paths that leaves out."""
    real = [p for p in paths if p.classification == "real"]
    noise = [p for p in paths if p.classification != "real"]
    shown = real + noise[: max(TOP_PATHS - len(real), 0)]
    return shown, len(paths) - len(shown)


def _terminal_fleet(report: Report, names: dict[str, str], console: Console) -> None:
    """With more than one replica in the window: who they are, and each one's share of the figures about a
    process's health. With one, only what else it lost, if anything (the rest is its figures above)."""
    if not report.fleet:
        lost = [(m, name, n) for m in report.methods for name, n in m.lost_by_name if n]
        if lost:
            console.print(
                "Also lost: "
                + "; ".join(f"{printable(names[m.method])}: {printable(name)} {n:,}" for m, name, n in lost),
                highlight=False,
                markup=False,
            )
        return
    seen = _table(
        f"Replicas ({len(report.replicas)} wrote in the window)",
        ("replica", "calls", "compared", "first seen", "last seen"),
    )
    for r in report.replicas:
        seen.add_row(
            cell(r.name), f"{r.calls:,}", f"{r.compared:,}", rfc3339(r.first_seen), rfc3339(r.last_seen)
        )
    console.print(seen)
    shares = _table(
        "Per method and replica: unproven, dropped and lost",
        ("method", "replica", "calls", "compared", "tainted", "skipped", "shadow errors", "errors",
         "dropped", "lost"),
    )  # fmt: skip
    for m in report.methods:
        for s in m.by_replica:
            shares.add_row(
                cell(names[m.method]),
                cell(s.replica),
                f"{s.calls:,}",
                f"{s.compared:,}",
                f"{s.tainted:,}",
                f"{s.skipped:,}",
                f"{s.shadow_errors:,}",
                f"[red]{s.errors:,}[/]" if s.errors else "0",
                f"[yellow]{s.dropped:,}[/]" if s.dropped else "0",
                f"[yellow]{s.lost:,}[/]" if s.lost else "0",
            )
    console.print(shares)


_NUMERIC = frozenset(
    {
        "calls",
        "compared",
        "lost",
        "BK rate",
        "noise rate",
        "tolerated",
        "tainted",
        "shadow errors",
        "skipped",
        "errors",
        "dropped",
        "noise",
    }
)


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose cells wrap (folding a long name or path) rather than being cut short with an ellipsis,
    so that no name is lost at 80 columns."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in _NUMERIC else "left", overflow="fold")
    return table


def short_names(methods: list[str]) -> dict[str, str]:
    """Each method's name as the report shows it: "Service/Method", without its package, unless another
    method of the report would be shown alike (then its full name)."""
    short = {}
    for m in methods:
        service, _, method = m.partition("/")
        short[m] = f"{service.rpartition('.')[2]}/{method}"
    taken: dict[str, int] = {}
    for name in short.values():
        taken[name] = taken.get(name, 0) + 1
    return {m: name if taken[name] == 1 and "/" in m else m for m, name in short.items()}


def _terminal_calls(report: Report, console: Console) -> None:
    assert report.calls is not None
    calls = _table(
        f"Calls that did not match, newest first ({len(report.calls):,} listed, at most {report.limit:,})",
        ("at", "method", "verdict", "key", "Bank → BK", "reason or first real difference"),
    )
    names = short_names(list(dict.fromkeys(call.method for call in report.calls)))
    for call in report.calls:
        calls.add_row(
            cell(call.at),
            cell(names[call.method]),
            cell(call.verdict + (f" ({call.mismatch})" if call.mismatch else "")),
            cell(call.routing_key),
            cell(f"{code(call.bank_code)} → {code(call.bk_code)}"),
            cell(_why(call)),
        )
    console.print(calls)


def _why(call: CallRecord) -> str:
    """The call's reason (why it was tainted, skipped, ...), then its first real difference."""
    first = _first_difference(call)
    return f"{call.reason}: {first}" if call.reason and first else call.reason or first


def _first_difference(call: CallRecord) -> str:
    for d in call.differences:
        if not d.rule and not d.noise:
            bank, bk = value_text(d.bank, _EXAMPLE_WIDTH), value_text(d.bk, _EXAMPLE_WIDTH)
            return f"{d.path}: {bank} → {bk}"
    return ""


def _noise_rate(path: PathStat, min_sampled: int) -> str:
    """Bank's rate at a path; whose it is when it is the service's; and, when it was measured on too few
    calls to count, on how many."""
    shown = percent(path.noise_rate)
    if path.noise_of:
        shown += f" (the service's, of {path.noise_sampled:,})"
    if path.noise_rate and path.noise_sampled < min_sampled:
        return f"{shown} (of {path.noise_sampled:,}: too few)"
    return shown
