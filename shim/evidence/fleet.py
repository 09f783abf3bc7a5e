"""The replicas of a fleet in a report: which shim processes wrote to the store in the window, and when.

Every comparison and every count row names the replica that wrote it (`shim.evidence.record.replica_name`:
host and pid). The report's queries tell `Replicas` what each one wrote; the report lists them
(`Report.replicas`) and, when there is more than one, breaks each method's figures about a process's
health down by replica (`MethodReport.by_replica`). `responsible` names the replicas behind a figure,
most first, for the gate's messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shim.evidence.model import ReplicaSeen, ReplicaShare


class Replicas:
    """What each replica wrote in the window, as the report's queries find it."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {}  # replica -> [calls, compared, first, last]

    def saw(self, replica: str, first: float, last: float, *, calls: int = 0, compared: int = 0) -> None:
        """`replica` wrote `calls` comparisons (`compared` of them clean), or counts, from `first` to
        `last`."""
        known = self.seen.get(replica)
        if known is None:
            self.seen[replica] = [calls, compared, float(first), float(last)]
            return
        known[0] += calls
        known[1] += compared
        known[2] = min(known[2], float(first))
        known[3] = max(known[3], float(last))

    def report(self) -> tuple[ReplicaSeen, ...]:
        return tuple(
            ReplicaSeen(name, int(calls), int(compared), first, last)
            for name, (calls, compared, first, last) in sorted(self.seen.items())
        )


TOP = 3  # replicas a message names; the others are summed up


def responsible(shares: Sequence[ReplicaShare], figure: Callable[[ReplicaShare], int]) -> str:
    """The replicas behind a figure, most first: "a:1 40, b:2 3", the top `TOP`, then "3 more: 5";
    "" when no replica has any."""
    counted = sorted(((figure(s), s.replica) for s in shares), key=lambda item: (-item[0], item[1]))
    counted = [(n, replica) for n, replica in counted if n > 0]
    named = ", ".join(f"{replica} {n:,}" for n, replica in counted[:TOP])
    rest = counted[TOP:]
    if rest:
        named += f", {len(rest)} more {sum(n for n, _ in rest):,}"
    return named
