"""Pairs of ids between Bank's answer and BK's, and BK's answers read through them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from google.protobuf import message

from comparators._id_kinds import Found, resolve
from comparators._id_lists import Path, list_moves, moved
from comparators._id_walk import Walk
from comparators.descriptors import DescriptorRegistry
from comparators.rules import RuleSet

# whether an id of a side's answer ("bank", "bk") has a pair already: named again there, it mints nothing
Known = Callable[[Found, str], bool]


def pair_up(
    bank: Sequence[Found],
    bk: Sequence[Found],
    moves: Mapping[Path, Mapping[int, int]] | None = None,
    known: Known | None = None,
) -> list[tuple[Found, Found]]:
    """Minted ids of the two answers paired by kind and place: the same path on both sides.

    Messages of a stream pair by position, up to the first message whose ids
    sit in other places on the two sides (`astray`): from there one stream
    has a message the other has not, and message i of one faces another
    message of the other. Inside a message, the elements of a list pair by
    position only when both sides hold ids in as many of its elements: a list
    one side made longer (it minted one more) says nothing certain about which
    id is which, and a wrong pair would later send a call to the wrong thing.
    A list in `moves` (one a `keyed` or `multiset` rule lets BK answer in
    another order: `comparators._id_lists.list_moves`) pairs each of Bank's
    elements with the one of BK's it faces there, whatever the lengths, and
    an element facing none pairs nothing. `known`: see `astray`.
    """
    limit = astray(bank, bk, known)
    moves = moves or {}
    right = {(f.kind, f.path): f for f in bk if f.minted}
    lengths: dict[tuple[str, str, tuple[str | int, ...]], set[int]] = {}
    for side, found in (("bank", bank), ("bk", bk)):
        for f in found:
            if f.minted:
                for i in range(1, len(f.path)):
                    index = f.path[i]
                    if isinstance(index, int):
                        lengths.setdefault((side, f.kind, f.path[:i]), set()).add(index)
    pairs = []
    for left in bank:
        if not left.minted or (limit is not None and int(left.path[0]) >= limit):
            continue
        there = moved(left.path, moves) if moves else left.path
        other = right.get((left.kind, there)) if there is not None else None
        if there is None or other is None:
            continue
        lists = [
            i
            for i in range(1, len(left.path))
            if isinstance(left.path[i], int) and left.path[:i] not in moves
        ]
        if any(
            len(lengths.get(("bank", left.kind, left.path[:i]), ()))
            != len(lengths.get(("bk", left.kind, there[:i]), ()))
            for i in lists
        ):
            continue
        pairs.append((left, other))
    return pairs


def pair_answers(
    fields: Walk,
    registry: DescriptorRegistry,
    rules: RuleSet,
    method: str,
    answers: tuple[Sequence[message.Message], Sequence[message.Message]],
    minted: tuple[Sequence[Found], Sequence[Found]],
    read_as_bank: Callable[[Found], str | None] | None = None,
    known: Known | None = None,
) -> tuple[list[tuple[Found, Found]], list[tuple[Found, Found]]]:
    """`pair_up` of the ids minted in two answers (`minted`: Bank's, then BK's, found in `answers`), each
    list a `keyed` or `multiset` rule lets BK answer in another order paired as the rule pairs its elements
    (`comparators._id_lists`); and apart, the pairs of elements the rule cannot tell apart, paired in order
    as it pairs them: to read these answers alone, never to be learned."""
    bank, bk = minted
    moves = list_moves(fields, registry, rules, method, answers, minted, read_as_bank)
    told = pair_up(bank, bk, moves.told, known)
    if not any(moves.unsure.values()):
        return told, []
    either = {path: {**moves.told.get(path, {}), **unsure} for path, unsure in moves.unsure.items()}
    learned = set(told)
    unsure = pair_up(bank, bk, {**moves.told, **either}, known)
    return told, [pair for pair in unsure if pair not in learned]


def astray(bank: Sequence[Found], bk: Sequence[Found], known: Known | None = None) -> int | None:
    """The first message (its index in the answers) in which the two sides' minted ids sit in other places:
    other kinds, or other fields (list positions aside: a list one side made longer is `pair_up`'s to
    judge); None when every message lines up. A message with ids on one side and none on the other is
    such a message: the streams no longer face each other message for message from there. Unless the ids
    `known` to have a pair already, named again there and minting nothing, are all that sit elsewhere: BK
    refusing a cancel Bank carries out, its answer naming no order where Bank's names the order a
    message before placed, is a difference in what the message says, not a message one side sent and
    the other did not."""
    every, new = _places(bank, bk, None), _places(bank, bk, known)
    for index in sorted({*every[0], *every[1]}):
        if every[0].get(index) != every[1].get(index) and (
            known is None or new[0].get(index) != new[1].get(index)
        ):
            return index
    return None


def _places(
    bank: Sequence[Found], bk: Sequence[Found], known: Known | None
) -> tuple[dict[int, set[tuple[str, tuple[str | int, ...]]]], ...]:
    """Per message, the places of each side's minted ids (but those `known` to have a pair already)."""
    places: tuple[dict[int, set[tuple[str, tuple[str | int, ...]]]], ...] = ({}, {})
    for side, name, found in zip(places, ("bank", "bk"), (bank, bk), strict=True):
        for f in found:
            if f.minted and (known is None or not known(f, name)):
                folded = tuple("*" if isinstance(p, int) else p for p in f.path[1:])
                side.setdefault(int(f.path[0]), set()).add((f.kind, folded))
    return places


def translate_answer(
    fields: Walk,
    method: str,
    messages: Sequence[message.Message],
    to_bank: Mapping[tuple[str, str], str],
    side: str = "response",
) -> list[Found]:
    """Rewrite BK's ids in decoded answer messages into Bank's, from (kind, BK id) -> Bank id.

    An id at a location several kinds share is translated by whichever kind's pair knows it; one that
    two kinds know with different Bank ids is left as it is. Returns the ids left (no Bank counterpart,
    or ambiguous). `side=""` looks at message types only, not at the method's paths (the messages
    of a google.rpc.Status, say).
    """

    def translate(found: Found) -> str | None:
        known = resolve(found, lambda kind, value: to_bank.get((kind, value)))
        return known if isinstance(known, str) else None

    return fields.rewrite(method, side, messages, translate)


def text_reads_as(bk_text: str, bank_text: str, to_bank: dict[tuple[str, str], str] | None) -> bool:
    """Whether BK's free text is Bank's once each BK id of the exchange's pairs in it, as a whole word, is
    read as the Bank id it pairs with (`read_as_bank`)."""
    read = read_as_bank(bk_text, to_bank)
    return read is not None and read == bank_text


def read_as_bank(bk_text: str, to_bank: dict[tuple[str, str], str] | None) -> str | None:
    """BK's free text with each BK id of the exchange's pairs in it, as a whole word, read as the Bank id it
    pairs with; None when the pairs change no id. Ids of digits alone are left as they are: a count or an
    amount could read as one by chance."""
    read = read_ids(bk_text, to_bank)
    return read[0] if read is not None else None


def read_ids(bk_text: str, to_bank: dict[tuple[str, str], str] | None) -> tuple[str, list[str]] | None:
    """`read_as_bank`'s text, and the Bank ids read into it, in their order."""
    if not to_bank:
        return None
    ids = {
        bk_id: bank_id for (_, bk_id), bank_id in to_bank.items() if bk_id != bank_id and not bk_id.isdigit()
    }
    if not ids:
        return None
    read: list[str] = []

    def bank_id(found: re.Match[str]) -> str:
        read.append(ids[found.group(1)])
        return read[-1]

    return _words(ids).sub(bank_id, bk_text), read


def ids_in(text: str, ids: list[str]) -> list[str]:
    """The whole-word occurrences of `ids` in `text`, exactly (case and all), in their order."""
    return [found.group(1) for found in _words(dict.fromkeys(ids)).finditer(text)] if ids else []


def _words(ids: Iterable[str]) -> re.Pattern[str]:
    return re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)) + r")(?![\w-])"
    )
