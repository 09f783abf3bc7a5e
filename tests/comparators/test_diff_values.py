"""diff_values() and format_path(): differences between plain values, and how their paths read."""

from __future__ import annotations

from typing import Any

import pytest

from comparators import DiffKind, diff_values, format_path


@pytest.mark.parametrize(
    ("parts", "prefix", "expected"),
    [
        pytest.param([], "", "<message>", id="root"),
        pytest.param([], "[3]", "[3]", id="root-of-a-stream-message"),
        pytest.param(["cash"], "", "cash", id="field"),
        pytest.param(["positions", 1, "quantity"], "", "positions[1].quantity", id="repeated-nested"),
        pytest.param(["a", "b", "c"], "", "a.b.c", id="nested"),
        pytest.param([0, "a"], "", "[0].a", id="leading-index"),
        pytest.param(["amount"], "[2]", "[2].amount", id="stream-prefix"),
        pytest.param(["trades", 0, "side"], "[1]", "[1].trades[0].side", id="stream-prefix-nested"),
        pytest.param(["m", 0, 1], "", "m[0][1]", id="consecutive-indexes"),
        pytest.param(["#111", "#1"], "", "#111.#1", id="unknown-fields"),
    ],
)
def test_format_path(parts: list[Any], prefix: str, expected: str) -> None:
    """Field names join with dots, indexes go in brackets, and an empty path is the whole message."""
    assert format_path(parts, prefix) == expected


Row = tuple[str, DiffKind, object, object]


@pytest.mark.parametrize(
    ("bank", "bk", "prefix", "expected"),
    [
        pytest.param({"a": 1}, {"a": 1}, "", [], id="equal"),
        pytest.param({"a": 1}, {"a": 2}, "", [("a", DiffKind.CHANGED, 1, 2)], id="changed"),
        pytest.param({"a": 1}, {"a": "1"}, "", [("a", DiffKind.TYPE, 1, "1")], id="type"),
        pytest.param({}, {"a": 1}, "", [("a", DiffKind.ADDED, None, 1)], id="added-to-empty"),
        pytest.param({"a": 1}, {}, "", [("a", DiffKind.REMOVED, 1, None)], id="removed-to-empty"),
        pytest.param(
            {"x": 1, "y": 2, "z": 3},
            {"w": 4},
            "",
            [
                ("w", DiffKind.ADDED, None, 4),
                ("x", DiffKind.REMOVED, 1, None),
                ("y", DiffKind.REMOVED, 2, None),
                ("z", DiffKind.REMOVED, 3, None),
            ],
            id="disjoint-fields-one-by-one-sorted",
        ),
        pytest.param(
            {"l": [1, 2]}, {"l": [1, 2, 3]}, "", [("l[2]", DiffKind.ADDED, None, 3)], id="list-item-added"
        ),
        pytest.param(
            {"l": [1, 2]}, {"l": [1]}, "", [("l[1]", DiffKind.REMOVED, 2, None)], id="list-item-removed"
        ),
        pytest.param(
            {"l": [1, 2]},
            {"l": [2, 1]},
            "",
            [
                ("l[0]", DiffKind.CHANGED, 1, 2),
                ("l[1]", DiffKind.CHANGED, 2, 1),
            ],
            id="order-of-repeated-matters",
        ),
        pytest.param(
            {"b": b"\x00"}, {"b": b"\x01"}, "", [("b", DiffKind.CHANGED, b"\x00", b"\x01")], id="bytes"
        ),
        pytest.param({"a": 1}, {"a": 2}, "[4]", [("[4].a", DiffKind.CHANGED, 1, 2)], id="prefix"),
        pytest.param(
            {"m": {"k": "v"}}, {"m": {"k": "w"}}, "", [("m.k", DiffKind.CHANGED, "v", "w")], id="map"
        ),
    ],
)
def test_diff_values(bank: Any, bk: Any, prefix: str, expected: list[Row]) -> None:
    """Each difference names its path, its kind and both values (None where a side has no value)."""
    diffs = diff_values(bank, bk, prefix)
    assert [(d.path, d.kind, d.bank, d.bk) for d in diffs] == expected
    assert all(d.rule == "" for d in diffs)
