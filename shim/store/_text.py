"""Text PostgreSQL can hold: a NUL character, which protobuf strings allow (a routing key, an id read from
a client's message) and PostgreSQL refuses in text, is written escaped and read back as it was.

U+FFFE (a noncharacter, never in real text) escapes: NUL is written U+FFFE "0", U+FFFE itself twice. Text
holding neither is written as it is, so every other value, and every comparison in SQL, is unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg.types.string import StrBinaryDumper, StrDumperUnknown, TextLoader

_ESCAPE = "\ufffe"
_ESCAPED = re.compile(_ESCAPE + "(.)", re.DOTALL)


def escaped(text: str) -> str:
    if "\x00" not in text and _ESCAPE not in text:
        return text
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("\x00", _ESCAPE + "0")


def unescaped(text: str) -> str:
    if _ESCAPE not in text:
        return text
    return _ESCAPED.sub(lambda found: "\x00" if found.group(1) == "0" else found.group(1), text)


class _Dumper(StrDumperUnknown):
    def dump(self, obj: str) -> Any:
        return super().dump(escaped(obj))


class _BinaryDumper(StrBinaryDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(escaped(obj))


class _Loader(TextLoader):
    def load(self, data: Any) -> Any:
        text = super().load(data)
        return unescaped(text) if isinstance(text, str) else text  # bytes: a connection with no encoding


def adapt(adapters: Any) -> None:
    """Escape the text of a connection's parameters, and unescape its text results (`conn.adapters`)."""
    adapters.register_dumper(str, _Dumper)
    adapters.register_dumper(str, _BinaryDumper)
    for name in ("text", "varchar", "bpchar", "name"):
        adapters.register_loader(name, _Loader)
