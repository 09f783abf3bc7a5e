"""A `Report` shown three ways: in the terminal, as JSON, and as one self-contained HTML page.

- `terminal(report, console)`: rich tables, for `shim report`. Stored text is shown as text, its
  control characters escaped (`shim.terminal_text`): a method name cannot drive the terminal.
- `to_json(report)`: a dict with a stable schema (`SCHEMA_VERSION`), documented in
  docs/report-json.md, for `shim report --json`.
- `html(report)`: one page with inline CSS and inline SVG charts, no script and no
  external URL, for `shim report --html FILE`. Every value is escaped: the
  differences hold what BK answered, which may be anything.

One module per output (`terminal`, `as_json`, `html`) and the page's template as a file of its own
(`report.html.j2`, package data); `text` holds the formatting they share.
"""

from __future__ import annotations

from shim.report.as_json import SCHEMA_VERSION, to_json
from shim.report.html import html
from shim.report.terminal import TOP_PATHS, short_names, terminal
from shim.report.text import code, millis, percent, value_text

__all__ = [
    "SCHEMA_VERSION",
    "TOP_PATHS",
    "code",
    "html",
    "millis",
    "percent",
    "short_names",
    "terminal",
    "to_json",
    "value_text",
]
