"""A `Report` shown three ways: in the terminal, as JSON, and as one self-contained HTML page.

- `terminal(report, console)`: rich tables, for `shim report`. Stored text is shown as text, its
  control characters escaped (`shim._text`): a method name cannot drive the terminal.
- `to_json(report)`: a dict with a stable schema (`SCHEMA_VERSION`), documented in
  docs/report-json.md, for `shim report --json`.
- `html(report)`: one page with inline CSS and inline SVG charts, no script and no
  external URL, for `shim report --html FILE`. Every value is escaped: the
  differences hold what BK answered, which may be anything.

Over 400 lines: the three renderings and the page's template (some 270 lines of HTML) share this module;
the template goes to a file of its own, and each output to a module, with the house issue's `shim/report/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jinja2
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shim._text import cell
from shim.evidence import Bucket, CallRecord, MethodReport, PathStat, Report, TaintedPath, rfc3339
from shim.gate import GateResult

SCHEMA_VERSION = 2  # 2: `compared` counts clean comparisons only (match, mismatch), not tainted calls
TOP_PATHS = 10  # paths per method in the terminal
_EXAMPLE_WIDTH = 40  # characters of an example value in the terminal


# -- formatting ------------------------------------------------------------------------------------------


def percent(rate: float | None) -> str:
    """A share as a percentage, 3 significant digits when small: 97.3%, 4.15%, 0.0031%."""
    if rate is None:
        return "—"
    value = rate * 100
    if value >= 10:
        return f"{value:.1f}%".replace(".0%", "%")
    return f"{value:.3g}%"


def millis(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def code(name: str | None) -> str:
    return name if name is not None else "not called"


def value_text(value: Any, width: int | None = None) -> str:
    """A recorded value as JSON text, cut to `width` characters."""
    text = json.dumps(value, ensure_ascii=False)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


# -- terminal --------------------------------------------------------------------------------------------


def terminal(report: Report, console: Console) -> None:
    """Print the report as tables. What the store holds (methods, paths, values, keys, reasons) is shown
    as text, never read as markup, with its control characters escaped (`shim._text`)."""
    console.print(
        Text.assemble(
            (f"Evidence from {rfc3339(report.since)} to {rfc3339(report.until)}", "bold"),
            " (",
            cell(report.store),
            ")",
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
        "Per method", ("method", "calls", "compared", "matched", "real mismatches", "unproven", "tolerated")
    )
    for m in report.methods:
        real = f"{m.real_mismatches:,} ({percent(m.real_mismatch_rate)})"
        unproven = f"{m.unproven:,} ({percent(m.unproven_rate)})"
        summary.add_row(
            cell(names[m.method]),
            f"{m.calls:,}",
            f"{m.compared:,}",
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

    codes = _table("Status codes, Bank → BK", ("method", "Bank", "BK", "calls"))
    for m in report.methods:
        for pair in m.codes:
            codes.add_row(
                cell(names[m.method]), cell(code(pair.bank)), cell(code(pair.bk)), f"{pair.count:,}"
            )
    console.print(codes)

    console.print(
        f"Noise: a path is noise when Bank differs from itself there and BK is not above Bank's rate by"
        f" more than {percent(report.relative)} of it and {percent(report.absolute)} of compared calls.",
        highlight=False,
    )
    if any(m.paths for m in report.methods):
        paths = _table(
            "Differing paths (real differences of mismatched calls)",
            ("method", "path", "calls", "BK rate", "noise rate", "class", "example, Bank → BK"),
        )
        for m in report.methods:
            for p in m.paths[:TOP_PATHS]:
                paths.add_row(
                    cell(names[m.method]),
                    cell(p.path),
                    f"{p.calls:,}",
                    percent(p.bk_rate),
                    percent(p.noise_rate),
                    "[red]real[/]" if p.classification == "real" else "noise",
                    cell(
                        f"{value_text(p.example_bank, _EXAMPLE_WIDTH)}"
                        f" → {value_text(p.example_bk, _EXAMPLE_WIDTH)}"
                    ),
                )
            if len(m.paths) > TOP_PATHS:
                paths.add_row(
                    cell(names[m.method]), f"… {len(m.paths) - TOP_PATHS} more (--json lists them all)"
                )
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


_NUMERIC = frozenset(
    {
        "calls",
        "compared",
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
            cell(_first_difference(call) or call.reason),
        )
    console.print(calls)


def _first_difference(call: CallRecord) -> str:
    for d in call.differences:
        if not d.get("rule") and not d.get("noise"):
            bank, bk = value_text(d.get("bank"), _EXAMPLE_WIDTH), value_text(d.get("bk"), _EXAMPLE_WIDTH)
            return f"{d.get('path', '')}: {bank} → {bk}"
    return ""


# -- JSON ------------------------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON values; the schema is in docs/report-json.md."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": rfc3339(report.generated_at),
        "window": {"since": rfc3339(report.since), "until": rfc3339(report.until)},
        "store": report.store,
        "noise": {"relative": report.relative, "absolute": report.absolute},
        "methods": [_method_json(m) for m in report.methods],
        "calls": None if report.calls is None else [_call_json(c) for c in report.calls],
        "calls_limit": report.limit,
    }


def _method_json(m: MethodReport) -> dict[str, Any]:
    return {
        "method": m.method,
        "calls": m.calls,
        "compared": m.compared,
        "matched": m.matched,
        "matched_rate": m.matched_rate,
        "mismatches": m.mismatches,
        "real_mismatches": m.real_mismatches,
        "real_mismatch_rate": m.real_mismatch_rate,
        "noise_mismatches": m.noise_mismatches,
        "tainted": m.tainted,
        "shadow_errors": m.shadow_errors,
        "skipped": m.skipped,
        "errors": m.errors,
        "unproven": m.unproven,
        "unproven_rate": m.unproven_rate,
        "tolerated": m.tolerated,
        "tolerated_by_rule": [{"rule": rule, "calls": n} for rule, n in m.tolerated_by_rule],
        "noise_sampled": m.noise_sampled,
        "dropped": m.dropped,
        "dropped_by_name": dict(m.dropped_by_name),
        "latency_ms": {
            side: {"count": latency.count, "p50": latency.p50, "p99": latency.p99}
            for side, latency in (("bank", m.bank_latency), ("bk", m.bk_latency))
        },
        "status_codes": [{"bank": c.bank, "bk": c.bk, "calls": c.count} for c in m.codes],
        "paths": [_path_json(p) for p in m.paths],
        "tainted_paths": [_tainted_path_json(t) for t in m.tainted_paths],
        "series": [
            {
                "start": rfc3339(b.start),
                "end": rfc3339(b.end),
                "compared": b.compared,
                "real_mismatches": b.real_mismatches,
            }
            for b in m.series
        ],
    }


def _path_json(p: PathStat) -> dict[str, Any]:
    return {
        "path": p.path,
        "kind": p.kind,
        "calls": p.calls,
        "bk_rate": p.bk_rate,
        "noise_calls": p.noise_calls,
        "noise_rate": p.noise_rate,
        "class": p.classification,
        "example": {
            "bank": p.example_bank,
            "bk": p.example_bk,
            "key": p.example_key,
            "request": p.example_request,
        },
    }


def _tainted_path_json(t: TaintedPath) -> dict[str, Any]:
    return {
        "path": t.path,
        "kind": t.kind,
        "calls": t.calls,
        "example": {"bank": t.example_bank, "bk": t.example_bk},
    }


def _call_json(c: CallRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "at": c.at,
        "method": c.method,
        "verdict": c.verdict,
        "mismatch": c.mismatch,
        "reason": c.reason,
        "routing_key": c.routing_key,
        "correlation_id": c.correlation_id,
        "status": {"bank": c.bank_code, "bk": c.bk_code},
        "latency_ms": {"bank": c.bank_ms, "bk": c.bk_ms},
        "differences": list(c.differences),
    }


# -- HTML ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Point:
    x: float
    y: float
    title: str


@dataclass(frozen=True, slots=True)
class _Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class _RateChart:
    """Compared calls per bucket (bars) and the real-mismatch rate (a line), for one method."""

    method: str
    bars: tuple[_Bar, ...]
    lines: tuple[str, ...]  # SVG polyline points, one per run of buckets with compared calls
    points: tuple[_Point, ...]
    top: str  # the rate at the top of the axis
    start: str
    end: str


_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 640, 150, 56, 12, 10, 24  # the rate chart's box and margins
_NICE = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _rate_chart(m: MethodReport) -> _RateChart:
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    rates = [b.rate for b in m.series if b.rate is not None]
    top = next((n for n in _NICE if n >= max(rates, default=0.0)), 1.0)
    most = max((b.compared for b in m.series), default=0) or 1
    step = plot_w / max(len(m.series), 1)
    bars: list[_Bar] = []
    points: list[_Point] = []
    lines: list[str] = []
    run: list[str] = []

    def label(b: Bucket) -> str:
        return f"{rfc3339(b.start)} to {rfc3339(b.end)}"

    for i, b in enumerate(m.series):
        height = plot_h * b.compared / most
        bars.append(
            _Bar(
                _LEFT + i * step + 1,
                _TOP + plot_h - height,
                max(step - 2, 1),
                height,
                f"{label(b)}: {b.compared:,} compared",
            )
        )
        if b.rate is None:
            if run:
                lines.append(" ".join(run))
                run = []
            continue
        x, y = _LEFT + (i + 0.5) * step, _TOP + plot_h * (1 - b.rate / top)
        run.append(f"{x:.1f},{y:.1f}")
        points.append(
            _Point(
                x,
                y,
                f"{label(b)}: {b.real_mismatches:,} real mismatches of {b.compared:,} ({percent(b.rate)})",
            )
        )
    if run:
        lines.append(" ".join(run))
    return _RateChart(
        method=m.method,
        bars=tuple(bars),
        lines=tuple(lines),
        points=tuple(points),
        top=percent(top),
        start=rfc3339(m.series[0].start) if m.series else "",
        end=rfc3339(m.series[-1].end) if m.series else "",
    )


@dataclass(frozen=True, slots=True)
class _LatencyRow:
    side: str  # "Bank" | "BK"
    y: float
    p50: float  # bar widths in px
    p99: float
    text: str


@dataclass(frozen=True, slots=True)
class _LatencyGroup:
    method: str
    y: float
    rows: tuple[_LatencyRow, ...]


@dataclass(frozen=True, slots=True)
class _LatencyChart:
    groups: tuple[_LatencyGroup, ...]
    height: float
    scale: str  # the latency at the right end of the bars


_LAT_LEFT, _LAT_BAR, _LAT_ROW, _LAT_GROUP = 48, 380, 18, 62


def _latency_chart(report: Report) -> _LatencyChart:
    most = max(
        (v for m in report.methods for v in (m.bank_latency.p99, m.bk_latency.p99) if v is not None),
        default=0.0,
    )
    scale = most or 1.0
    groups = []
    for index, m in enumerate(report.methods):
        y = 8 + index * _LAT_GROUP
        rows = []
        for row, (side, latency) in enumerate((("Bank", m.bank_latency), ("BK", m.bk_latency))):
            p50, p99 = latency.p50 or 0.0, latency.p99 or 0.0
            text = (
                f"p50 {millis(latency.p50)} ms · p99 {millis(latency.p99)} ms"
                if latency.count
                else "not measured"
            )
            rows.append(
                _LatencyRow(
                    side, y + 18 + row * _LAT_ROW, _LAT_BAR * p50 / scale, _LAT_BAR * p99 / scale, text
                )
            )
        groups.append(_LatencyGroup(m.method, y, tuple(rows)))
    return _LatencyChart(tuple(groups), 8 + len(groups) * _LAT_GROUP, millis(most) if most else "0")


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a; margin: 0 auto;
       max-width: 1180px; padding: 1.5em 2em 4em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #d8dde3; }
.meta { color: #5a6672; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e3e7eb; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f5f7; } th:first-child, th.l, td.l { text-align: left; }
code { font: 0.9em ui-monospace, "SFMono-Regular", Menlo, monospace; background: #f3f5f7; padding: 0
0.2em;
       overflow-wrap: break-word; }
details.long summary { cursor: pointer; } details.long code { display: block; white-space: pre-wrap;
       overflow-wrap: anywhere; max-width: 46em; }
.real { color: #b3261e; font-weight: 600; } .noise { color: #6b5900; } .ok { color: #1e7b34; }
.warn { background: #fff5d6; border: 1px solid #e8d48a; padding: 0.5em 0.8em; }
.explain { background: #f6f8fa; border-left: 4px solid #8aa4c0; padding: 0.6em 1em; }
dt { font-weight: 600; margin-top: 0.5em; } dd { margin-left: 1.2em; }
svg text { font: 11px system-ui, sans-serif; fill: #3c4650; }
.chart { margin: 0.4em 0 1.2em; }
.verdict { border: 2px solid; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }
.verdict.pass { border-color: #1e7b34; background: #eef8f0; }
.verdict.fail { border-color: #b3261e; background: #fdf0ef; }
.verdict h2 { border: 0; margin: 0 0 0.3em; font-size: 1.25em; }
.verdict ul { margin: 0.3em 0 0; padding-left: 1.2em; }
</style>
</head>
<body>
{% macro value(v) %}{% set text = value_text(v) %}{% if text | length > FOLD
%}<details class="long"><summary><code>{{ text[:FOLD - 20] }}…</code> ({{ "{:,}".format(text | length) }}
characters)</summary><code>{{ text }}</code></details>{% else %}<code>{{ text }}</code>{% endif -%}
{% endmacro %}
<h1>{{ title }}</h1>
<p class="meta">From <b>{{ since }}</b> to <b>{{ until }}</b> (UTC) · store
<code>{{ report.store }}</code> ·
generated {{ generated }}</p>

{% if gate is not none %}
<div class="verdict {{ 'pass' if gate.passed else 'fail' }}" id="gate">
<h2>Gate: {{ 'PASS' if gate.passed else 'FAIL' }}</h2>
{% if gate.passed %}
<p>Every criterion of the gate is met on this page's evidence ({{ gate.criteria | length }} criteria): BK may
become primary for these methods.</p>
{% else %}
<p>{{ gate.failed | length }} of {{ gate.criteria | length }} criteria are not met on this page's evidence:
BK may not become primary yet.</p>
<ul>
{% for c in gate.failed %}<li><code>{{ c.method or "evidence" }}</code> {{ c.name }}: {{ c.measured }}
(needs {{ c.threshold }})</li>
{% endfor %}</ul>
{% endif %}
</div>
{% endif %}

<div class="explain">
<h3>How to read this page</h3>
<p>The shim sits in front of <b>Bank</b>, the legacy service. It gives every client Bank's answer, sends
the
same call to <b>BK</b>, the new service, and compares the two answers. This page counts those comparisons,
method by method, over the window above. BK is ready to replace Bank for a method when its real mismatch
rate is zero (or as low as agreed) over enough compared calls, and when few of its calls are
<i>unproven</i> (tainted, skipped, shadow errors, errors: calls that say nothing about BK). Start with the
table below: the <span class="real">real mismatches</span> and <i>unproven</i> columns are the ones that
matter. Then look at the differing paths to see what BK gets wrong, with one example each.</p>
</div>

{% if not report.methods %}
<p class="warn">No comparison is stored in this window.</p>
{% else %}
<h2>Per method</h2>
<table>
<tr><th>method</th><th>calls</th><th>compared</th><th>unproven</th><th>matched</th><th>real mismatches</th>
<th>noise</th><th>tainted</th><th>tolerated</th><th>shadow errors</th><th>skipped</th><th>errors</th>
<th>dropped</th>
<th>Bank p50 / p99 ms</th><th>BK p50 / p99 ms</th></tr>
{% for m in report.methods %}
<tr><td class="l"><code>{{ m.method }}</code></td><td>{{ "{:,}".format(m.calls) }}</td>
<td>{{ "{:,}".format(m.compared) }}</td>
<td class="{{ 'noise' if m.unproven else 'ok' }}">{{ "{:,}".format(m.unproven) }}
({{ percent(m.unproven_rate) }})</td>
<td>{{ "{:,}".format(m.matched) }} ({{ percent(m.matched_rate) }})</td>
<td class="{{ 'real' if m.real_mismatches else 'ok' }}">{{ "{:,}".format(m.real_mismatches) }}
({{ percent(m.real_mismatch_rate) }})</td>
<td>{{ "{:,}".format(m.noise_mismatches) }}</td><td>{{ "{:,}".format(m.tainted) }}</td>
<td>{{ "{:,}".format(m.tolerated) }}</td><td>{{ "{:,}".format(m.shadow_errors) }}</td>
<td>{{ "{:,}".format(m.skipped) }}</td>
<td class="{{ 'real' if m.errors else '' }}">{{ "{:,}".format(m.errors) }}</td>
<td>{{ "{:,}".format(m.dropped) }}</td>
<td>{{ millis(m.bank_latency.p50) }} / {{ millis(m.bank_latency.p99) }}</td>
<td>{{ millis(m.bk_latency.p50) }} / {{ millis(m.bk_latency.p99) }}</td></tr>
{% endfor %}
</table>
{% if dropped %}<p class="warn">{{ "{:,}".format(dropped) }} comparisons were counted but not stored (the
shim or its store was overloaded): the figures above miss them.</p>{% endif %}

<h2>Real-mismatch rate over time</h2>
<p>Grey bars: calls compared in each slice of the window. Red line: the share of them that were real
mismatches
(hover a point for the figures). A gap in the line is a slice with no compared call.</p>
{% for c in rate_charts %}
<h3><code>{{ c.method }}</code></h3>
<svg class="chart" role="img" aria-label="real-mismatch rate of {{ c.method }}" width="{{ W }}"
height="{{ H }}"
     viewBox="0 0 {{ W }} {{ H }}">
<line x1="{{ LEFT }}" y1="{{ TOP }}" x2="{{ LEFT }}" y2="{{ H - BOTTOM }}" stroke="#9aa5b1"/>
<line x1="{{ LEFT }}" y1="{{ H - BOTTOM }}" x2="{{ W - RIGHT }}" y2="{{ H - BOTTOM }}" stroke="#9aa5b1"/>
<text x="{{ LEFT - 4 }}" y="{{ TOP + 8 }}" text-anchor="end">{{ c.top }}</text>
<text x="{{ LEFT - 4 }}" y="{{ H - BOTTOM }}" text-anchor="end">0%</text>
<text x="{{ LEFT }}" y="{{ H - 6 }}">{{ c.start }}</text>
<text x="{{ W - RIGHT }}" y="{{ H - 6 }}" text-anchor="end">{{ c.end }}</text>
{% for b in c.bars %}<rect x="{{ '%.1f'|format(b.x) }}" y="{{ '%.1f'|format(b.y) }}"
width="{{ '%.1f'|format(b.width) }}"
 height="{{ '%.1f'|format(b.height) }}" fill="#d5dbe1"><title>{{ b.title }}</title></rect>
{% endfor %}
{% for points in c.lines %}<polyline points="{{ points }}" fill="none" stroke="#b3261e" stroke-width="2"/>
{% endfor %}
{% for p in c.points %}<circle cx="{{ '%.1f'|format(p.x) }}" cy="{{ '%.1f'|format(p.y) }}" r="3"
fill="#b3261e">
<title>{{ p.title }}</title></circle>
{% endfor %}
</svg>
{% endfor %}

<h2>Latency, Bank and BK</h2>
<p>Each side's latency as the shim measured it. The dark part of a bar reaches the median (p50), the
light part
the 99th percentile (p99). The scale is the same for every method; the right end is {{ latency.scale }}
ms.</p>
<svg class="chart" role="img" aria-label="latency p50 and p99 of Bank and BK per method"
width="{{ LAT_W }}"
     height="{{ latency.height }}" viewBox="0 0 {{ LAT_W }} {{ latency.height }}">
{% for g in latency.groups %}<text x="0" y="{{ g.y + 10 }}" font-weight="600">{{ g.method }}</text>
{% for r in g.rows %}<text x="0" y="{{ r.y + 11 }}">{{ r.side }}</text>
<rect x="{{ LAT_LEFT }}" y="{{ r.y }}" width="{{ '%.1f'|format(r.p99) }}" height="13"
 fill="{{ '#f2b8b5' if r.side == 'BK' else '#b9cde4' }}"><title>{{ r.side }} p99</title></rect>
<rect x="{{ LAT_LEFT }}" y="{{ r.y }}" width="{{ '%.1f'|format(r.p50) }}" height="13"
 fill="{{ '#b3261e' if r.side == 'BK' else '#2f5f8f' }}"><title>{{ r.side }} p50</title></rect>
<text x="{{ LAT_LEFT + LAT_BAR + 8 }}" y="{{ r.y + 11 }}">{{ r.text }}</text>
{% endfor %}{% endfor %}
</svg>

<h2>Status codes</h2>
<p>How often Bank answered one status while BK answered another. Pairs that differ are worth a look,
unless a
status rule declares them equivalent.</p>
<table>
<tr><th>method</th><th>Bank</th><th>BK</th><th>calls</th></tr>
{% for m in report.methods %}{% for c in m.codes %}
<tr><td class="l"><code>{{ m.method }}</code></td><td class="l">{{ code(c.bank) }}</td>
<td class="l {{ '' if c.bank == c.bk else 'real' }}">{{ code(c.bk) }}</td>
<td>{{ "{:,}".format(c.count) }}</td></tr>
{% endfor %}{% endfor %}
</table>

<h2 id="differs">Where BK differs</h2>
<p>Each path (list positions folded into <code>[*]</code>) where mismatched calls really differed. <b>BK
rate</b>:
share of compared calls with a real difference there. <b>Noise rate</b>: share of the calls asked of Bank
twice
whose two Bank answers differed there. The class is <span class="noise">noise</span> when Bank differs
from itself
there and BK is not clearly worse (by more than {{ percent(report.relative) }} of Bank's rate and more
than
{{ percent(report.absolute) }} of compared calls); otherwise <span class="real">real</span>.</p>
{% for m in report.methods if m.paths %}
<h3><code>{{ m.method }}</code></h3>
<table>
<tr><th>path</th><th>kind</th><th>calls</th><th>BK rate</th><th>noise
rate</th><th>class</th><th>Bank</th><th>BK</th><th class="l">the call: its keys and request</th></tr>
{% for p in m.paths %}
<tr><td class="l"><code>{{ p.path }}</code></td><td
class="l">{{ p.kind }}</td><td>{{ "{:,}".format(p.calls) }}</td>
<td>{{ percent(p.bk_rate) }}</td><td>{{ percent(p.noise_rate) }}</td>
<td class="l {{ p.classification }}">{{ p.classification }}</td>
<td class="l">{{ value(p.example_bank) }}</td><td class="l">{{ value(p.example_bk) }}</td>
<td class="l">{% if p.example_key %}<code>{{ p.example_key }}</code> {% endif %}
{%- if p.example_request is not none %}{{ value(p.example_request) }}
{%- else %}<span class="meta">request not shown (kept with <code>store.payloads</code>, read with the
descriptors)</span>{% endif %}</td></tr>
{% endfor %}
</table>
{% else %}
<p class="ok">No real difference in a mismatched call.</p>
{% endfor %}

{% if any_tainted_paths %}
<h2>Differing paths of tainted calls</h2>
<p>Where tainted calls really differed: calls on a key out of step, whose difference a write BK missed
may explain. They are not counted as mismatches, and they count against the gate as unproven; bring
BK's book in line and resync the keys to have such calls compared again.</p>
{% for m in report.methods if m.tainted_paths %}
<h3><code>{{ m.method }}</code></h3>
<table>
<tr><th>path</th><th>kind</th><th>calls</th><th>Bank</th><th>BK</th></tr>
{% for t in m.tainted_paths %}
<tr><td class="l"><code>{{ t.path }}</code></td><td class="l">{{ t.kind }}</td>
<td>{{ "{:,}".format(t.calls) }}</td>
<td class="l">{{ value(t.example_bank) }}</td><td class="l">{{ value(t.example_bk) }}</td></tr>
{% endfor %}
</table>
{% endfor %}
{% endif %}

<h2 id="tolerated">Tolerated, by rule</h2>
<p>Differences that a comparison rule declared benign (a decimal written another way, another id format,
…), by
the rule's name: calls with at least one such difference.</p>
{% if any_tolerated %}
<table>
<tr><th>method</th><th>rule</th><th>calls</th></tr>
{% for m in report.methods %}{% for rule, count in m.tolerated_by_rule %}
<tr><td class="l"><code>{{ m.method }}</code></td><td
class="l">{{ rule }}</td><td>{{ "{:,}".format(count) }}</td></tr>
{% endfor %}{% endfor %}
</table>
{% else %}<p>None.</p>{% endif %}
{% endif %}

{% if report.calls is not none %}
<h2>Calls that did not match</h2>
<p>Newest first; {{ "{:,}".format(report.calls|length) }} listed, at most
{{ "{:,}".format(report.limit) }}.</p>
<table>
<tr><th>at</th><th>method</th><th>verdict</th><th>routing key</th><th>Bank → BK</th><th>reason and
differences</th></tr>
{% for c in report.calls %}
<tr><td class="l">{{ c.at }}</td><td class="l"><code>{{ c.method }}</code></td>
<td class="l {{ c.mismatch or '' }}">{{ c.verdict }}{% if c.mismatch %} ({{ c.mismatch }}){% endif %}</td>
<td class="l">{{ c.routing_key }}</td><td class="l">{{ code(c.bank_code) }} → {{ code(c.bk_code) }}</td>
<td class="l">{% if c.reason %}{{ c.reason }}<br>{% endif %}
{% for d in c.differences %}<code>{{ d.get("path", "") }}</code> {{ d.get("kind", "") }}:
<code>{{ value_text(d.get("bank")) }}</code> → <code>{{ value_text(d.get("bk")) }}</code>
{% if d.get("rule") %}(tolerated: {{ d.get("rule") }}){% elif d.get("noise") %}(Bank vs
Bank){% endif %}<br>
{% endfor %}</td></tr>
{% endfor %}
</table>
{% endif %}

<h2>Verdicts explained</h2>
<dl>
<dt>matched</dt><dd>BK's answer equals Bank's, or differs only in ways a rule tolerates.</dd>
<dt>real mismatch</dt><dd>BK's answer really differs from Bank's, at a path that is not noise. This is
what must
reach zero.</dd>
<dt>noise</dt><dd>A mismatch whose every real difference is at a path where Bank also differs from itself
(a
request id, a server timestamp) and where BK is not clearly worse than Bank.</dd>
<dt>tainted</dt><dd>A mismatch on a key (an account, …) where an earlier write reached only one side: the
difference is explained by that missed write, not counted as real.</dd>
<dt>tolerated</dt><dd>Calls with a difference that a rule declared benign; a call can be matched and
tolerated.</dd>
<dt>shadow error</dt><dd>BK gave no usable answer: it timed out or was unavailable.</dd>
<dt>skipped</dt><dd>The call was not compared: it was not mirrored (the shadow side was full, or sampling
left it
out), it named an id BK has no counterpart for, or the client cancelled it.</dd>
<dt>errors</dt><dd>The comparison could not be made: the comparator failed, an answer did not decode, or
the
adapter in front of BK failed. The reason is in the list of calls.</dd>
<dt>dropped</dt><dd>Comparisons counted by the shim but not stored, because it or its store was
overloaded.</dd>
<dt>compared</dt><dd>matched + mismatches: clean comparisons, made on keys in step with nothing in the
way.
Rates are shares of it.</dd>
<dt>unproven</dt><dd>tainted + shadow errors + skipped + errors: calls that prove nothing about BK, as a
share
of all calls. The gate allows only a small share of them.</dd>
</dl>

<h2>Noise explained</h2>
<p>Some fields differ even when Bank is asked the same thing twice: request ids, server clocks, ordering
of
unordered results. For a share of reads (<code>[noise] reads</code>) the shim asks Bank a second time and
records where Bank's two answers differ. A path where BK differs from Bank at about the rate Bank differs
from
itself is noise, not a fault of BK's; a mismatch made only of such paths is counted under <i>noise</i>,
not as
a real mismatch. Better than noise: a rule that tolerates the field, so the difference is not counted at
all.</p>
</body>
</html>
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)


_FOLD = 80  # characters of a value beyond which the page folds it (a click unfolds it)


def html(report: Report, gate: GateResult | None = None) -> str:
    """One self-contained page: inline CSS and SVG, no script, no external URL; every value escaped. With
    `gate`, the gate's verdict on the page's evidence comes first."""
    template = _ENV.from_string(_TEMPLATE)
    return template.render(
        title="Parity report: Bank and BK",
        report=report,
        gate=gate,
        since=rfc3339(report.since),
        until=rfc3339(report.until),
        generated=rfc3339(report.generated_at),
        dropped=sum(m.dropped for m in report.methods),
        any_tolerated=any(m.tolerated_by_rule for m in report.methods),
        any_tainted_paths=any(m.tainted_paths for m in report.methods),
        rate_charts=[_rate_chart(m) for m in report.methods],
        latency=_latency_chart(report),
        percent=percent,
        millis=millis,
        code=code,
        value_text=value_text,
        FOLD=_FOLD,
        W=_W,
        H=_H,
        LEFT=_LEFT,
        RIGHT=_RIGHT,
        TOP=_TOP,
        BOTTOM=_BOTTOM,
        LAT_W=_LAT_LEFT + _LAT_BAR + 230,
        LAT_LEFT=_LAT_LEFT,
        LAT_BAR=_LAT_BAR,
    )
