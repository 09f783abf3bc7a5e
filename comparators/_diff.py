"""Differences between plain values that no descriptor describes (unknown groups), by DeepDiff."""

from __future__ import annotations

from typing import Any

from deepdiff import DeepDiff
from deepdiff.helper import NotPresent

from comparators._model import Difference, DiffKind

_REPORT_KINDS = {
    "values_changed": DiffKind.CHANGED,
    "type_changes": DiffKind.TYPE,
    "dictionary_item_added": DiffKind.ADDED,
    "iterable_item_added": DiffKind.ADDED,
    "dictionary_item_removed": DiffKind.REMOVED,
    "iterable_item_removed": DiffKind.REMOVED,
    "set_item_added": DiffKind.ADDED,
    "set_item_removed": DiffKind.REMOVED,
}


def diff_values(bank: Any, bk: Any, prefix: str = "") -> list[Difference]:
    """Field-level differences between two normalised values, with readable paths."""
    # threshold_to_diff_deeper=0: report each field added or removed, even when two
    # messages share few fields (DeepDiff >= 8 would report the whole message instead)
    tree = DeepDiff(bank, bk, view="tree", verbose_level=2, threshold_to_diff_deeper=0)
    diffs: list[Difference] = []
    for report, items in tree.items():
        kind = _REPORT_KINDS.get(report, DiffKind.CHANGED)
        for item in items:
            path = format_path(item.path(output_format="list"), prefix)
            diffs.append(Difference(path, kind, _present(item.t1), _present(item.t2)))
    diffs.sort(key=lambda d: d.path)
    return diffs


def _present(value: Any) -> Any:
    return None if isinstance(value, NotPresent) else value


def format_path(parts: list[Any], prefix: str = "") -> str:
    """['positions', 0, 'quantity'] -> 'positions[0].quantity'."""
    text = prefix
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<message>"
