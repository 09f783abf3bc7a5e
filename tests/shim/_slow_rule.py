"""A custom rule that takes its time: a comparison plane behind its clients (`test_operator_guards.py`)."""

from __future__ import annotations

import time
from typing import Any


def slow_any(bank: Any, bk: Any) -> bool:
    """Any two values are the same, after half a second."""
    time.sleep(0.5)
    return True
