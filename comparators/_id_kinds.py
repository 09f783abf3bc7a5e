"""The kinds of id a config declares (`[ids.NAME]`), and an id as found in a message.

`comparators.ids` is the public face: these names are imported from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

_LEARN_FROM = ("writes", "all")
_SCOPES = ("global", "query")


class IdError(ValueError):
    """An id declaration does not fit the descriptors; the message names the setting."""


@dataclass(frozen=True, slots=True)
class IdKind:
    """One kind of id, as declared in `[ids.NAME]`."""

    name: str
    minted: tuple[str, ...]
    references: tuple[str, ...] = ()
    owner_key: tuple[str, ...] = ()
    learn_from: str = "writes"
    scope: str = "global"

    def __post_init__(self) -> None:
        where = f"ids.{self.name}"
        if not self.minted:
            raise IdError(f"{where}.minted: name at least one field that mints ids of this kind")
        if self.learn_from not in _LEARN_FROM:
            raise IdError(f"{where}.learn_from: {self.learn_from!r} is not one of {', '.join(_LEARN_FROM)}")
        if self.scope not in _SCOPES:
            raise IdError(f"{where}.scope: {self.scope!r} is not one of {', '.join(_SCOPES)}")
        if self.scope == "query" and self.owner_key:
            raise IdError(f"{where}.owner_key: an id scoped to one query has no owner")


class Found(NamedTuple):
    """One id in a message."""

    kind: str  # the kind; for a location several kinds share, the first of `kinds`
    minted: bool  # found at a `minted` location (else a reference)
    path: tuple[str | int, ...]  # message index, then field names and list indices
    value: str
    owner: str  # the owner key's value, when the kind declares one that applies here
    kinds: tuple[str, ...] = ()  # every kind the location may hold, when several share it

    @property
    def every_kind(self) -> tuple[str, ...]:
        """The kinds this id may be of: one, or each kind declaring its location."""
        return self.kinds or (self.kind,)


class Ambiguous(NamedTuple):
    """An id two kinds' maps know with different counterparts: (kind, counterpart) of each."""

    value: str
    counterparts: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        known = " and ".join(f"as {kind} {other!r}" for kind, other in self.counterparts)
        return f"{self.value!r} is known {known}"


def resolve(found: Found, lookup: Callable[[str, str], str | None]) -> str | Ambiguous | None:
    """The counterpart of `found` through `lookup(kind, value)`, whichever of its kinds knows it.

    None when no kind knows it; `Ambiguous` when two kinds know it with different counterparts.
    """
    if not found.kinds:
        return lookup(found.kind, found.value)
    known = [(kind, other) for kind in found.kinds if (other := lookup(kind, found.value)) is not None]
    if len({other for _, other in known}) > 1:
        return Ambiguous(found.value, tuple(known))
    return known[0][1] if known else None


OWNERS = "\x1f"  # separates the owner keys of an id that has several (a transfer's two accounts)
