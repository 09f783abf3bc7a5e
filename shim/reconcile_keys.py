"""The keys `shim reconcile` and the checks of keys out of step read: what account a key names, and its value
in a state read's request.

Where the id spaces overlap, one text is an id on each side, of two accounts (Bank's A2 is BK's A3, BK's A2
is Bank's A1). So a key is read as the side it is known to be an id of:

- a key Bank lists, or a mark made while Bank answered (`side` "bank"), is Bank's id: read on Bank as it is,
  on BK as the id the map pairs it with (or as it is);
- a key BK lists, or a mark made while BK answered ("bk"), is BK's id: read as the Bank id the map pairs it
  with. Paired with none, it is an account of BK's alone (`Target.bk_only`) when its text is an id the map
  knows, on either side; otherwise a name both sides spell alike, read as it is;
- a mark that says neither ("": made before marks said, or marks of both sides' ids of one text) names
  every account of its text the map knows: Bank's, and BK's (both, where the id spaces overlap);
- a key given with no side (a keys file, the stored traffic's routing keys) is Bank's when Bank knows it as
  an id of its own, else BK's where the map pairs it (`as_bank_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import message
from google.protobuf.descriptor import FieldDescriptor

from comparators.message_api import descriptor_of
from shim.ids import IdBook

BANK, BK = "bank", "bk"
_INTEGERS = {  # cpp type -> (name, least, most)
    FieldDescriptor.CPPTYPE_INT32: ("int32", -(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: ("int64", -(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: ("uint32", 0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: ("uint64", 0, 2**64 - 1),
}


def set_key(msg: message.Message, path: str, value: str) -> None:
    """Set the field at `path` (dotted) of `msg` to the key `value`; ValueError, saying why, when the field
    cannot take it (a text for an integer field, an integer out of its range)."""
    *parents, last = path.split(".")
    for part in parents:
        msg = getattr(msg, part)
    setattr(msg, last, _value(descriptor_of(msg).fields_by_name[last], value))


def _value(field: Any, text: str) -> object:
    if field.cpp_type == field.CPPTYPE_STRING:
        return text.encode() if field.type == field.TYPE_BYTES else text
    if field.cpp_type in _INTEGERS:
        name, least, most = _INTEGERS[field.cpp_type]
        try:
            number = int(text)
        except ValueError:
            raise ValueError("not an integer") from None
        if not least <= number <= most:
            raise ValueError(f"out of range for {name}")
        return number
    if field.cpp_type == field.CPPTYPE_ENUM:
        named = field.enum_type.values_by_name.get(text)
        if named is not None:
            return named.number
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"no value of {field.enum_type.full_name}") from None
        if not -(2**31) <= number < 2**31:
            raise ValueError("out of range for an enum")
        return number
    if field.cpp_type == field.CPPTYPE_BOOL:
        if text.lower() not in ("true", "false"):
            raise ValueError("not true or false")
        return text.lower() == "true"
    if field.cpp_type in (field.CPPTYPE_FLOAT, field.CPPTYPE_DOUBLE):
        try:
            return float(text)
        except ValueError:
            raise ValueError("not a number") from None
    raise ValueError("a message field takes no key")


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """An account to read: `key`, Bank's id (BK is read by the id the map pairs it with, or as it is); or,
    `bk_only`, BK's id of an account no Bank id pairs with: Bank's side of it is not known."""

    key: str
    bk_only: bool = False

    def reading(self, text: str) -> str:
        """Which account `text` was read as, for a key that names more than one."""
        if self.bk_only:
            return f"as BK's {text}, which pairs with no Bank id"
        return f"as Bank's {text}" if self.key == text else f"as BK's {text}, Bank's {self.key}"


class Keys:
    """What account each key names, through the id map (every key as it is without one)."""

    def __init__(self, ids: IdBook | None) -> None:
        self.ids = ids

    async def as_bank_key(self, key: str) -> str:
        """A key given in either side's ids, in Bank's: a BK id the map pairs becomes Bank's, unless Bank
        knows the key as an id of its own (where the id spaces overlap, the same text is Bank's first)."""
        if self.ids is None or await self._known(BANK, key):
            return key
        for kind in self.ids.fields.kinds:
            bank_key = await self.ids.counterpart(BK, kind, key)
            if bank_key is not None:
                return bank_key
        return key

    async def targets(self, key: str, side: str) -> list[Target]:
        """The accounts a key out of step names, by the side its mark says it is an id of ("": either)."""
        if self.ids is None or side == BANK:
            return [Target(key)]
        if side == BK:
            return [await self.of_bk(key)]
        found = [Target(key)] if await self._known(BANK, key) else []
        if await self._known(BK, key):
            found.append(await self.of_bk(key))
        return list(dict.fromkeys(found)) or [Target(key)]

    async def of_bk(self, key: str, kinds: Sequence[str] | None = None) -> Target:
        """BK's id `key` (of one of `kinds`; None: of any kind the map has): the Bank id the map pairs it
        with; paired with none, BK's alone when the text is an id the map knows (on either side: where the id
        spaces overlap, Bank's id of that text is another account), else as it is (a name both sides spell
        alike)."""
        if self.ids is None:
            return Target(key)
        kinds = tuple(self.ids.fields.kinds) if kinds is None else kinds
        for kind in kinds:
            bank_key = await self.ids.counterpart(BK, kind, key)
            if bank_key is not None:
                return Target(bank_key)
        if kinds and (await self._known(BANK, key, kinds) or await self._known(BK, key, kinds)):
            return Target(key, bk_only=True)
        return Target(key)

    async def _known(self, side: str, key: str, kinds: Sequence[str] | None = None) -> bool:
        """Whether the map knows `key` as an id of `side`'s own, paired or minted."""
        assert self.ids is not None
        for kind in self.ids.fields.kinds if kinds is None else kinds:
            if await self.ids.counterpart(side, kind, key) is not None or await self.ids.minted(
                side, kind, key
            ):
                return True
        return False


__all__ = ["BANK", "BK", "Keys", "Target", "set_key"]
