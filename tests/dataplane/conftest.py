"""Fixtures of the data-plane tests."""

from __future__ import annotations

from tests.shim.conftest import ledgers
from tests.shim.test_transparency import echo_pair

__all__ = ["echo_pair", "ledgers"]
