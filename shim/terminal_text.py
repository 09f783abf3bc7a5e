"""Text from outside (method names, keys, reasons, values) made safe to show in a terminal.

Clients name methods, keys and values; the store keeps them. Shown as they are,
an ESC sequence among them would drive the terminal (move the cursor, rewrite
earlier lines, set the window title), and a `[` would be taken as rich markup.
`printable` escapes every character that is not printable, as Python writes it
(`\\x1b`, `\\u202e`), and `cell` wraps the result in a rich `Text`, which rich
never reads as markup. `printable_json` does the same to JSON text, with JSON's
own escapes.
"""

from __future__ import annotations

from rich.text import Text


def printable(value: object) -> str:
    """`value` as text, each control, format or separator character escaped (`\\x1b`, `\\u2028`)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def cell(value: object, style: str = "") -> Text:
    """`printable(value)` for rich (a table cell, a line): shown as it is, never read as markup."""
    return Text(printable(value), style=style)


def printable_json(text: str) -> str:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) with each non-printable character in its
    strings written as a JSON escape (`\\u001b`): the same JSON, inert in a terminal. Newlines stay: outside
    strings they are only the indentation's."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\n" else _json_escape(ord(ch)) for ch in text)


def _json_escape(code: int) -> str:
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: a surrogate pair, as JSON writes it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
