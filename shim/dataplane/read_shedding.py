"""Reads shed at Envoy while the comparison plane is behind, counted and recorded by method.

Beyond its pace a plane falls behind: copies wait in Envoy, and in the plane's own gRPC server, until
Envoy gives up on them, writes among them (each lost write puts its keys out of step). Shedding reads
as the plane takes them up (`shim.dataplane.processor`) spends its time on them all the same, and on a
machine whose cores are taken its gRPC threads may take up a copy only after Envoy gave up on it. So
Envoy stops copying reads while the plane is behind: each mirrored read method has, before its route, the
same route copying nothing, which Envoy takes while its run-time value `shim.shed_reads` is 100
(`shim.dataplane.envoy_config.route_table`; the plane sets it through Envoy's admin interface, and Envoy
applies it to the calls that start afterwards). A read taken that way is answered by the primary as
ever; Envoy counts it on that route (`vhost.all.route.shed-N.upstream_rq_total`), and the plane records
it under its method: not mirrored, shed. Writes are never shed.

The plane is behind when, in the last `QUIET` seconds, it took up `MANY` copies or more within a second,
each at least `BEHIND` of Envoy's hold after its call started (Envoy's clock); with `shadow.shed_lag`
above 0 and once its start-up is over, as for the other shedding. A few late copies are a blip a plane
recovers from (a busy machine, a pause): shedding then would only lose evidence.

A plane started again behind the same Envoy goes on from what the planes before it counted (a small
JSON file beside Envoy's files), and sets the value first: a plane that stopped while shedding leaves
it at 100. An Envoy started again counts from 0: a count lower than the last is taken whole.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import structlog

from comparators import Exchange
from shim.dataplane.envoy_config import SHED_KEY, SHED_ROUTE, write_atomically
from shim.dataplane.unseen import record_skipped
from shim.metrics import Counters

# of Envoy's hold: a copy taken up this late after its call started is a sign of falling behind. Earlier
# than where the processor sheds the reads it takes up (`processor.SHED_BEHIND`, four fifths): Envoy must
# stop sending reads while the writes' copies can still be taken in time (`bench/overload.py` at 800/s:
# from four fifths, 12.9 % of the writes were lost; from half, none)
BEHIND = 0.5
MANY = 10  # late copies within a second: a sign of falling behind (fewer: a blip)
QUIET = 2.0  # seconds with no such sign: the plane has caught up, and reads are copied again
PER_TICK = 2_500  # shed reads recorded at most each second, beside the comparisons
_SHED = "upstream_rq_total"  # of a read method's route while reads are shed: its calls then
_log = structlog.get_logger("shim.dataplane")

Stats = Callable[[str], Awaitable[Mapping[str, int]]]
Runtime = Callable[[str], Awaitable[object]]  # a POST on Envoy's admin interface


class ReadShedding:
    """The reads shed at Envoy: whether they are shed now, and those counted and not yet recorded."""

    def __init__(self, routes: Mapping[str, str], counters: Counters, counted: Path | None = None) -> None:
        self._methods = {route: method for method, route in routes.items()}  # by its stat prefix
        self._counters = counters
        self._counted = counted
        self._applied: bool | None = None  # as Envoy was last told (None: not yet)
        self._lagging = 0  # the plane's count of late copies, as last seen
        self._sign = -QUIET  # when (monotonic) the plane last showed a sign of falling behind
        # Envoy's counts so far, by route; the reads not recorded yet, by method
        self.seen, self.unrecorded = _read(counted)
        self._written = (dict(self.seen), dict(self.unrecorded))

    @property
    def on(self) -> bool:
        """Whether Envoy was last told to shed reads."""
        return bool(self._applied)

    def wanted(self, armed: bool, lagging: int) -> bool:
        """Whether reads are shed now (asked each second): `armed` (the shim sheds, its start-up over), and
        a sign of falling behind within `QUIET` s: `MANY` more late copies (`lagging`: the plane's count of
        them) since last asked. (Not a copy Envoy cut off: a client's cancel can end one too.)"""
        now = time.monotonic()
        if lagging - self._lagging >= MANY:
            self._sign = now
        self._lagging = lagging
        return armed and now - self._sign < QUIET

    async def apply(self, on: bool, runtime: Runtime) -> None:
        """Shed reads (`on`) or copy them again: told to Envoy at each change, and each second while on (an
        Envoy started again starts copying them)."""
        if not self._methods or (on == self._applied and not on):
            return
        await runtime("/runtime_modify?" + urllib.parse.urlencode({SHED_KEY: 100 if on else 0}))
        previous, self._applied = self._applied, on
        if previous is None or previous == on:
            return
        _log.warning(
            "reads are shed at Envoy: the shim is behind"
            if on
            else "reads are copied again: the shim caught up",
            methods=len(self._methods),
        )

    async def count(self, stats: Stats) -> dict[str, int]:
        """Take Envoy's counts of the reads it shed; those new, by method."""
        if not self._methods:
            return {}
        figures = await stats(f"^vhost\\.all\\.route\\.{SHED_ROUTE}[0-9]+\\.{_SHED}$")
        new: dict[str, int] = {}
        for name, value in figures.items():
            route = name.removeprefix("vhost.all.route.").removesuffix("." + _SHED)
            method = self._methods.get(route)
            if method is None:
                continue
            before = self.seen.get(route, 0)
            more = value - before if value >= before else value  # less: an Envoy started again, from 0
            self.seen[route] = value
            if more:
                self.unrecorded[method] = self.unrecorded.get(method, 0) + more
                self._counters.inc("calls", method, more)  # calls the shim had, though not their copies
                self._counters.inc("shadow_shed", method, more)
                new[method] = new.get(method, 0) + more
        self._write()
        return new

    def take(self, limit: int | None = PER_TICK) -> dict[str, int]:
        """The shed reads to record now, by method: all of them, or at most `limit`."""
        out: dict[str, int] = {}
        left = limit
        for method in sorted(self.unrecorded):
            count = self.unrecorded[method] if left is None else min(self.unrecorded[method], left)
            if count:
                out[method] = count
                self.unrecorded[method] -= count
            if left is not None:
                left -= count
        self.unrecorded = {m: c for m, c in self.unrecorded.items() if c}
        self._write()
        return out

    def _write(self) -> None:
        figures = (dict(self.seen), dict(self.unrecorded))
        if self._counted is not None and figures != self._written:
            write_atomically(self._counted, {"shed": figures[0], "unrecorded": figures[1]})
        self._written = figures


def record_shed(
    submit: Callable[[Exchange], object],
    shed: Mapping[str, int],
    not_sampled: Callable[[str, tuple[str, ...], int], int] | None = None,
) -> None:
    """One skipped record per read Envoy shed, under its method; but for those sampling would have left out
    anyway (`not_sampled`: how many of so many reads, their keys unknown; `ShadowDispatcher.not_sampled`),
    which are no evidence missing."""
    why = "not mirrored: shed at Envoy while the shim was behind (reads are shed first)"
    for method, count in shed.items():
        if not_sampled is not None:
            count -= not_sampled(method, (), count)
        record_skipped(submit, method, count, why, is_write=False)


def _read(path: Path | None) -> tuple[dict[str, int], dict[str, int]]:
    """What earlier planes counted: Envoy's counts by route, and the reads not recorded yet."""
    if path is None or not path.exists():
        return {}, {}
    try:
        counted = json.loads(path.read_text())
        seen = {str(k): int(v) for k, v in counted["shed"].items()}
        return seen, {str(k): int(v) for k, v in counted.get("unrecorded", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        _log.warning(
            "the reads earlier comparison planes shed are unreadable: counting from now", file=str(path)
        )
        return {}, {}


def since(started: float | None, held_for: float) -> bool:
    """Whether a copy of a call that `started` (`time.time()`, Envoy's clock) is taken up late enough to be a
    sign of falling behind."""
    return started is not None and held_for > 0 and time.time() - started >= held_for * BEHIND
