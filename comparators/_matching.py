"""The most pairs of alike elements two lists' left-overs make: a maximum bipartite matching.

Each left-over element of Bank's may be alike (equal under the rules) to several of BK's: a greedy pairing,
each taking the first alike it finds, can take the one another needed ([10, 9] against [9.5, 11] with a
tolerance of 1: 10 takes 9.5, and 9 is left with 11). Augmenting paths (Kuhn's algorithm) find a pairing
with as many pairs as there can be. Whether two elements are alike costs a trial walk: each is asked at
most once, and only when needed, within a budget of trials shared by the whole comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class Unproven(Exception):
    """Pairing needed more trials than the budget had left: which elements pair is not known. `bank` and `bk`
    are how many elements of each side were left over (0 while not yet known)."""

    def __init__(self, bank: int = 0, bk: int = 0) -> None:
        super().__init__(bank, bk)
        self.bank = bank
        self.bk = bk


def maximum_matching(
    lefts: Sequence[int], rights: Sequence[int], alike: Callable[[int, int], bool], budget: list[int]
) -> dict[int, int]:
    """left -> right for as many pairs of `alike` elements as can be made, each element in one pair at most.

    `budget[0]` is how many more times `alike` may be asked (it is decreased); Unproven when a pairing needs
    more. A first pass gives each left the first free right alike to it (most pairs, when elements are
    alike to one other only, at one trial each); then each left still free looks for an augmenting path.
    """
    known: dict[tuple[int, int], bool] = {}

    def edge(left: int, right: int) -> bool:
        found = known.get((left, right))
        if found is None:
            if budget[0] <= 0:
                raise Unproven
            budget[0] -= 1
            found = known[(left, right)] = bool(alike(left, right))
        return found

    pair_of: dict[int, int] = {}  # left -> right
    owner: dict[int, int] = {}  # right -> left
    for left in lefts:
        for right in rights:
            if right not in owner and edge(left, right):
                pair_of[left], owner[right] = right, left
                break
    for start in lefts:
        if start in pair_of:
            continue
        reached: dict[int, int] = {}  # right -> the left it was reached from
        queue, queued = [start], {start}
        free: int | None = None
        for left in queue:  # breadth first along alternating paths; the queue grows as it is read
            for right in rights:
                if right in reached or not edge(left, right):
                    continue
                reached[right] = left
                holder = owner.get(right)
                if holder is None:
                    free = right
                    break
                if holder not in queued:
                    queued.add(holder)
                    queue.append(holder)
            if free is not None:
                break
        while free is not None:  # each left on the path takes the right it was reached by
            left = reached[free]
            previous = pair_of.get(left)
            pair_of[left], owner[free] = free, left
            free = previous if left != start else None
    return pair_of
