"""Which element of BK's list faces which of Bank's, where a rule lets BK answer a list that mints ids in
another order (`keyed`, `multiset`): for `comparators._id_pairs.pair_up`.

A list of the two answers is paired element by element by position unless its list rule says otherwise.
Under `keyed`, an element faces the one of the other side with its key, when that key is the key of one
element on each side. Under `multiset` (and under `keyed` by a field that holds minted ids, whose values
never match across the sides), an element faces the one of the other side equal to it once the minted ids
of both are left out (and BK's references are read as Bank's ids, as far as the pairs in memory know them),
or else equal under the rules, as the comparison pairs them, when each is the only such element for the
other. Elements that cannot be told apart (alike, or of one key, two or more on each side) are paired only
to read this answer (`Moved.unsure`), never learned: a wrong pair would send a later call to the wrong
thing, where no pair stops it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from google.protobuf import message
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from comparators._id_kinds import Found
from comparators._id_walk import Walk
from comparators._walk import _ALIKE_TRIALS, Walker, _key_of
from comparators.descriptors import DescriptorRegistry
from comparators.message_api import copy_from, descriptor_of, serialize
from comparators.rules import Ignore, Keyed, Multiset, RuleSet

Path = tuple[str | int, ...]
# Bank's path of a list (message index, field names, list indices and map keys, ending at the list's field)
# -> {Bank's index: BK's index}; a Bank element not there faces nothing
Moves = dict[Path, dict[int, int]]


class Moved(NamedTuple):
    """Which of BK's elements faces each of Bank's: those `told` apart, and those `unsure`: elements that
    cannot be told from others (alike, or of one key), paired in order as the comparison pairs them. Their
    ids are read through these pairs to compare this answer alone, never learned."""

    told: Moves
    unsure: Moves


def list_moves(
    fields: Walk,
    registry: DescriptorRegistry,
    rules: RuleSet,
    method: str,
    answers: tuple[Sequence[message.Message], Sequence[message.Message]],
    minted: tuple[Sequence[Found], Sequence[Found]],
    read_as_bank: Callable[[Found], str | None] | None = None,
) -> Moved:
    """For each list holding Bank's minted ids (`minted`: Bank's, then BK's) that a `keyed` or `multiset`
    rule lets BK answer in another order, which of BK's elements faces each of Bank's (`answers`: Bank's
    decoded answer messages, then BK's, as the ids were found in). `read_as_bank(found)` is the Bank id a
    reference in BK's answer pairs with (None: not known). Lists under no such rule are left out."""
    bank, bk = answers
    lists = sorted(
        {
            f.path[:i]
            for f in minted[0]
            if f.minted
            for i in range(1, len(f.path))
            if isinstance(f.path[i], int)
        },
        key=len,
    )
    ruled = []
    for path in lists:
        found = _list_at(bank, path)
        if found is None:
            continue
        fd = found[0]
        holder = fd.containing_type
        assert holder is not None  # a field of a message
        target = f"{holder.full_name}.{fd.name}"
        rule = rules.list_rule(method, target)
        if isinstance(rules.value_rule(method, target), Ignore):
            continue  # the list is compared as one value: its elements are never paired
        if isinstance(rule, Multiset) or (isinstance(rule, Keyed) and fd.message_type is not None):
            ruled.append((path, target, rule, fd.message_type))
    moves: Moves = {}
    unsure: Moves = {}
    if not ruled:
        return Moved(moves, unsure)
    plain_bank = _plain(fields, method, bank, None)
    plain_bk = _plain(fields, method, bk, read_as_bank)
    walker = Walker(registry, rules, method)
    for path, target, rule, element in ruled:
        there = moved(path, moves)
        left, right = _list_at(plain_bank, path), _list_at(plain_bk, there) if there is not None else None
        if left is None or right is None:
            continue
        if isinstance(rule, Keyed) and not _minted_in_key(rule, path, minted):
            moves[path], unsure[path] = _by_key(rule, left[1], right[1])
        else:

            def alike(a: Any, b: Any, target: str = target, element: Descriptor | None = element) -> bool:
                return walker.alike(target, element, a, b)

            moves[path], unsure[path] = _by_likeness(left[1], right[1], alike)
    return Moved(moves, unsure)


def moved(path: Path, moves: Mapping[Path, Mapping[int, int]]) -> Path | None:
    """Bank's `path` as the place in BK's answer that faces it: each index of a list in `moves` replaced
    by BK's; None when an element on the way faces nothing."""
    out = list(path)
    for i in range(1, len(path)):
        index = path[i]
        if isinstance(index, int):
            order = moves.get(path[:i])
            if order is not None:
                if index not in order:
                    return None
                out[i] = order[index]
    return tuple(out)


def _plain(
    fields: Walk,
    method: str,
    answers: Sequence[message.Message],
    read_as_bank: Callable[[Found], str | None] | None,
) -> list[message.Message]:
    """Copies of the answers with every minted id left out (each side's own, never equal across them), and
    with `read_as_bank`, the references read as Bank's ids."""
    copies = []
    for answer in answers:
        copy = type(answer)()
        copy_from(copy, answer)
        copies.append(copy)

    def plain(found: Found) -> str | None:
        if found.minted:
            return ""
        return read_as_bank(found) if read_as_bank is not None else None

    fields.rewrite(method, "response", copies, plain)
    return copies


def _list_at(answers: Sequence[message.Message], path: Path) -> tuple[FieldDescriptor, Any] | None:
    """The repeated field a list's path ends at, and its value; None where the path leads nowhere (an index
    past the end, a message packed in an Any)."""
    top = path[0]
    if not isinstance(top, int) or top >= len(answers):
        return None
    held: Any = answers[top]
    i = 1
    while i < len(path):
        name = path[i]
        if not isinstance(held, message.Message) or not isinstance(name, str):
            return None
        fd = descriptor_of(held).fields_by_name.get(name)
        if fd is None:
            return None
        value = getattr(held, name)
        entry = fd.message_type
        is_map = entry is not None and entry.GetOptions().map_entry
        if i == len(path) - 1:
            return (fd, value) if fd.is_repeated and not is_map else None
        step = path[i + 1]
        if is_map:
            keys = [key for key in value if str(key) == step]
            if not keys:
                return None
            held, i = value[keys[0]], i + 2
        elif fd.is_repeated:
            if not isinstance(step, int) or step >= len(value):
                return None
            held, i = value[step], i + 2
        elif entry is not None:
            held, i = value, i + 1
        else:
            return None
    return None


def _minted_in_key(rule: Keyed, path: Path, minted: tuple[Sequence[Found], Sequence[Found]]) -> bool:
    """Whether a field of the key holds ids minted in an element of the list, on either side."""
    depth = len(path)
    return any(
        f.minted and len(f.path) == depth + 2 and f.path[:depth] == path and f.path[-1] in rule.key
        for side in minted
        for f in side
    )


def _by_key(rule: Keyed, bank: Sequence[Any], bk: Sequence[Any]) -> tuple[dict[int, int], dict[int, int]]:
    """(Bank's index -> BK's for each key held by one element on each side, and for each key held by as many
    elements, two or more, on each side: these the comparison pairs in order, and so do they)."""
    left, right = _indices(_key_of(rule, item) for item in bank), _indices(_key_of(rule, item) for item in bk)
    told: dict[int, int] = {}
    unsure: dict[int, int] = {}
    for key, mine in left.items():
        theirs = right.get(key, [])
        if len(mine) == len(theirs):
            (told if len(mine) == 1 else unsure).update(zip(mine, theirs, strict=True))
    return told, unsure


def _by_likeness(
    bank: Sequence[Any], bk: Sequence[Any], alike: Callable[[Any, Any], bool]
) -> tuple[dict[int, int], dict[int, int]]:
    """(Bank's index -> BK's for the elements told apart, and for those that cannot be), as a multiset pairs
    them: first equal elements, then of the rest those alike (equal under the rules).

    Elements equal to one another on one side are a group. A group of Bank's faces the group of BK's equal
    to it; of the groups left, one alike to a group of the other side alone, and that group to it alone. One
    element facing one is told apart. Groups of as many elements, two or more, are not: which of Bank's is
    which of BK's is not known (they are paired in order, as the comparison pairs them). Groups of different
    sizes pair nothing."""
    left, right = _indices(_canonical(item) for item in bank), _indices(_canonical(item) for item in bk)
    facing = [(value, value) for value in left if value in right]
    rest_left = [value for value in left if value not in right]
    rest_right = [value for value in right if value not in left]
    if rest_left and rest_right and len(rest_left) * len(rest_right) <= _ALIKE_TRIALS:
        candidates = {
            a: [b for b in rest_right if alike(bank[left[a][0]], bk[right[b][0]])] for a in rest_left
        }
        chosen: dict[Hashable, list[Hashable]] = defaultdict(list)
        for a, found in candidates.items():
            for b in found:
                chosen[b].append(a)
        facing += [
            (a, found[0]) for a, found in candidates.items() if len(found) == 1 and chosen[found[0]] == [a]
        ]
    told: dict[int, int] = {}
    unsure: dict[int, int] = {}
    for a, b in facing:
        mine, theirs = left[a], right[b]
        if len(mine) == len(theirs):
            (told if len(mine) == 1 else unsure).update(zip(mine, theirs, strict=True))
    return told, unsure


def _indices(values: Iterable[Hashable]) -> dict[Hashable, list[int]]:
    """Each value -> the positions it is at."""
    out: dict[Hashable, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        out[value].append(i)
    return out


def _canonical(item: Any) -> Hashable:
    """An element as a value equal to another element's when the two are equal."""
    if isinstance(item, message.Message):
        return serialize(item, deterministic=True)
    value: Hashable = item
    return value
