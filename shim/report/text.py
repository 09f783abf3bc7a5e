"""How the reports write numbers, codes and recorded values."""

from __future__ import annotations

import json
from typing import Any


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
    """A side's status; None: it gave no answer of its own (not called, or its call cut short by the shim,
    by the client or by a timeout: a client's deadline is no answer of Bank's)."""
    return name if name is not None else "no answer"


def value_text(value: Any, width: int | None = None) -> str:
    """A recorded value as JSON text, cut to `width` characters."""
    text = json.dumps(value, ensure_ascii=False)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text
