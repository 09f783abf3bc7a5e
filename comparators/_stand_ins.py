"""BK's own ids that have the text of a paired Bank id, where the id spaces overlap.

Where both sides mint from the same space, BK's own "M1" (paired with nothing) may have the very text of
Bank's "M1", which is BK's "M2". Read through the pairs, BK's "M1" stays "M1", and the walk would find it
equal to Bank's "M1", though it names another thing. So, once BK's ids are read as Bank's, each id left
in BK's answer whose text is a Bank id paired with another BK id is replaced by a stand-in that equals no
id of either answer; the walk then finds the difference wherever it places the id (a field, a list keyed
or compared as a multiset, rich error details), under the rules as any difference. The differences show
BK's text again, as unmapped ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import message

from comparators._model import Difference, DiffKind
from comparators.ids import Found, IdFields

_TOP = 2**31 - 1  # an integer stand-in fits every integer field type
_FREE = (DiffKind.CHANGED, DiffKind.ADDED)


class StandIns:
    """The stand-ins put in BK's answer, and how a difference shows them again (BK's text)."""

    def __init__(self) -> None:
        self._shown: dict[Any, Any] = {}  # stand-in (as text, as a number, hashed) -> BK's value
        self._texts: dict[str, str] = {}  # stand-in text -> BK's text, for paths

    def add(self, stand_in: str, value: str) -> None:
        self._shown[stand_in] = value
        self._texts[stand_in] = value
        if stand_in.lstrip("-").isdigit():
            self._shown[int(stand_in)] = int(value)

    def hashed(self, hash_of: Any) -> None:
        """The stand-ins of a redacted field are hashed: shown as the hash of BK's text."""
        for stand_in, value in list(self._texts.items()):
            self._shown[hash_of(stand_in)] = self._texts[hash_of(stand_in)] = hash_of(value)

    def show(self, difference: Difference) -> Difference:
        """A difference as found, with BK's text for each stand-in; one at the id itself is an unmapped id."""
        path = difference.path
        for stand_in, value in self._texts.items():
            if stand_in in path:  # a list keyed by the id: "trades[trade_id=<stand-in>]"
                path = re.sub(
                    "=" + re.escape(stand_in) + r"(?=[,\]#])", "=" + value.replace("\\", r"\\"), path
                )
        bk = difference.bk
        if _hashable(bk) and bk in self._shown:
            kind = (
                DiffKind.UNMAPPED_ID if difference.kind in _FREE and not difference.rule else difference.kind
            )
            return difference._replace(path=path, kind=kind, bk=self._shown[bk])
        return difference._replace(path=path, bk=self._restored(bk))

    def _restored(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._restored(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._restored(v) for v in value]
        return self._shown.get(value, value) if _hashable(value) else value


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def stand_in(
    fields: IdFields,
    method: str,
    bank: Sequence[message.Message],
    bk: Sequence[message.Message],
    left: Sequence[Found],
    to_bank: Mapping[tuple[str, str], str],
    side: str = "response",
) -> StandIns | None:
    """Replace, in BK's decoded answer (its ids read as Bank's already; `left` were not), each id whose
    text is a Bank id paired with another BK id by a stand-in. None when there is none."""
    if not left or not to_bank:
        return None
    from_bank = {(kind, bank_id): bk_id for (kind, bk_id), bank_id in to_bank.items()}

    def paired_elsewhere(found: Found) -> bool:
        return any(
            from_bank.get((kind, found.value), found.value) != found.value for kind in found.every_kind
        )

    own = {(f.path, f.value) for f in left if paired_elsewhere(f)}
    if not own:
        return None
    taken = {f.value for f in fields.find(method, side, [*bank, *bk], None)}
    taken.update(v for pair in [*to_bank, *from_bank] for v in pair)
    stand_ins = StandIns()
    chosen: dict[str, str] = {}
    number = _TOP

    def free(value: str) -> str:
        nonlocal number
        if value.lstrip("-").isdigit():  # an integer field takes only a number
            while str(number) in taken:
                number -= 1
            text = str(number)
        else:
            text = "\x00" + value
            while text in taken:
                text = "\x00" + text
        taken.add(text)
        return text

    def replace(found: Found) -> str | None:
        if (found.path, found.value) not in own:
            return None
        if found.value not in chosen:
            chosen[found.value] = free(found.value)
            stand_ins.add(chosen[found.value], found.value)
        return chosen[found.value]

    fields.rewrite(method, side, bk, replace)
    return stand_ins
