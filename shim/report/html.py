"""`shim report --html FILE`: one self-contained page, from the template `report.html.j2` (package data):
inline CSS and SVG charts, no script, no external URL. Every value is escaped: the differences hold
what BK answered, which may be anything."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import jinja2

from shim.evidence import Bucket, MethodReport, Report, rfc3339
from shim.gate import GateResult
from shim.report.text import code, millis, percent, value_text


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


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
_TEMPLATE = _ENV.from_string(
    resources.files("shim.report").joinpath("report.html.j2").read_text(encoding="utf-8")
)


_FOLD = 80  # characters of a value beyond which the page folds it (a click unfolds it)


def html(report: Report, gate: GateResult | None = None, judged: str = "") -> str:
    """One self-contained page: inline CSS and SVG, no script, no external URL; every value escaped. With
    `gate`, the gate's verdict comes first: on `judged` (what it judged, as `shim gate` does: "the evidence
    of the last 24h ([gate] window), ..."), else on the page's own evidence."""
    return _TEMPLATE.render(
        title="Parity report: Bank and BK",
        report=report,
        gate=gate,
        judged=judged or "this page's evidence",
        own=not judged,
        since=rfc3339(report.since),
        until=rfc3339(report.until),
        generated=rfc3339(report.generated_at),
        dropped=sum(m.dropped for m in report.methods),
        lost=[(m.method, name, n) for m in report.methods for name, n in m.lost_by_name if n],
        rfc3339=rfc3339,
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
