"""The calls whose copies never reached the shim: counted from Envoy's stats, and recorded.

Each copy is a stream from Envoy to the processor, and each such stream the processor did not end
itself is one Envoy gave up on: it could not connect (the processor was down), it dropped the copy
after `deferred_close_timeout` (the processor had not taken it all), or the connection it was on closed
(Envoy's flood protection closes a connection whose peer reads nothing; Envoy's ext_proc counts those
streams neither closed nor failed). So they are counted as the streams started, less those still
waiting or open and those the processor ended (`copy_streams`). Less the copies the processor received
first, each recorded under its method (`shim.dataplane.processor`: a copy lost before its method was known
is not among them), that is the calls the shim never saw. Those are the copies cut off as the processor
read them, and those it answered just as Envoy gave up on them (Envoy counts them given up): the
processor's answers beyond Envoy's count of them, read after it so as never to fall short. Each becomes a
skipped record under `UNSEEN`: its method and keys are unknown, so every call there is unproven and the
gate counts it against every method it judges; the evidence has a hole, and it shows.

Behind `shim serve`'s supervisor, a comparison plane that is started again goes on from what the
planes before it counted (a small JSON file beside Envoy's files), so that no gap is counted twice and
the one while no plane ran is counted once. An Envoy the supervisor started again counts from 0, under a
plane that runs on or one started after it. Each Envoy started names itself on its copies' streams
(`ENVOY_HEADER`): the processor notes its counts as the first copy of a new one comes in, and from then on
only what it takes of the new one's copies is set against the new one's counts, added to what was counted
before (`new_envoy`). The copies the old Envoy gave up on after its figures were last read are not known:
its stats die with it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import structlog

from comparators import Code, Exchange, Outcome
from shim.dataplane.envoy_config import write_atomically
from shim.metrics import UNSEEN as UNSEEN  # where the plane records them

PER_TICK = 2_500  # unseen calls recorded at most each second: a long gap is recorded over several, beside
# the comparisons (the pipeline holds `comparison.max_pending`)
# Envoy's figures for the copies' streams, read one at a time in this order: a stream that moves on
# between two reads is counted twice (fewer given up, until the next count) and never missed, so a
# stream the processor has is never counted given up. A stream that fails as it starts is counted in
# none of them: with the processor's cluster (one static host, no circuit breaker that applies) Envoy
# starts every stream it is asked for.
STREAMS = (
    "http.shim.ext_proc.mirror.streams_started",
    "cluster.processor.upstream_rq_pending_active",  # waiting for a connection
    "cluster.processor.upstream_rq_active",  # open
    "cluster.processor.upstream_rq_2xx",  # ended by the processor: the processor answers only as it ends
)
_log = structlog.get_logger("shim.dataplane")


class Unseen:
    """How many calls the shim has not seen, so far; persisted in `counted` when given."""

    def __init__(self, counted: Path | None = None) -> None:
        self._counted = counted
        figures = _read(counted)
        self.unsent, self._cut_before, self.unrecorded, self._base, self.envoy = figures
        self._written = figures

    def update(self, given_up: int, taken: int) -> int:
        """The calls newly unseen, from the copies this Envoy gave up on so far and those of them the
        processor took and recorded under their method (`taken`, since this plane started, or as
        `new_envoy` says)."""
        cut = self._cut_before + taken
        now = max(self.unsent, self._base + given_up - cut)
        new, self.unsent = now - self.unsent, now
        if new:
            _log.warning(
                "Envoy could not hand copies of calls to the shim: they are not mirrored, and are recorded "
                f"as {UNSEEN!r}",
                copies=new,
                since_start=now,
            )
        self.unrecorded += new
        self._write(cut)
        return new

    def new_envoy(self, taken: int, envoy: str) -> None:
        """Envoy was started again (`envoy`: the new one's name, `ENVOY_HEADER`), its counts from 0: those so
        far stay counted, and the new one's add to them, less what the processor takes of its copies (what
        `update` is given beyond `taken`)."""
        self._base, self._cut_before, self.envoy = self.unsent, -taken, envoy
        self._write(0)

    def seen_envoy(self, envoy: str, again: bool) -> None:
        """This plane's copies come from the Envoy named `envoy`; `again`: not the one the planes before
        counted, but one started again while no plane ran (its counts from 0: those so far stay counted,
        and what the planes before took of the old one's copies is set aside)."""
        if again:
            self._base, self._cut_before = self.unsent, 0
        self.envoy = envoy
        self._write(self._cut_before if again else self._written[1])

    def take(self, limit: int | None = PER_TICK) -> int:
        """How many of the calls counted unseen to record now: all of them, or at most `limit`."""
        count = self.unrecorded if limit is None else min(self.unrecorded, limit)
        self.unrecorded -= count
        self._write(self._written[1])
        return count

    def _write(self, cut: int) -> None:
        figures = (self.unsent, cut, self.unrecorded, self._base, self.envoy)
        if self._counted is not None and figures != self._written:
            write_atomically(self._counted, dict(zip(_FIGURES, figures, strict=True)))
        self._written = figures


class Streams(NamedTuple):
    """Envoy's count of the copies' streams so far."""

    started: int
    given_up: int  # ended, not by the processor's answer
    answered: int  # ended by the processor's answer


async def copy_streams(stats: Callable[[str], Awaitable[Mapping[str, int]]]) -> Streams:
    """The copies' streams Envoy has started so far, those of them it gave up on, and those the processor
    answered; `stats` reads Envoy's figures whose names match a regular expression."""
    figures = []
    for name in STREAMS:
        figures.append((await stats(f"^{re.escape(name)}$")).get(name, 0))
    started, waiting, open_, ended = figures
    return Streams(started, max(started - waiting - open_ - ended, 0), ended)


def record_unseen(submit: Callable[[Exchange], object], count: int) -> None:
    """One skipped record per call whose copy Envoy could not send, under `UNSEEN`."""
    why = (
        "not mirrored: Envoy could not hand this call's copy to the shim (the processor was down or "
        "overloaded); its method and keys are unknown"
    )
    record_skipped(submit, UNSEEN, count, why, is_write=True)


def record_skipped(
    submit: Callable[[Exchange], object], method: str, count: int, why: str, *, is_write: bool
) -> None:
    """`count` skipped records of calls of `method` the plane had no copy of, saying `why`."""
    now = time.time()
    for _ in range(count):
        submit(
            Exchange(
                method=method,
                requests=(),
                primary=Outcome(code=Code.UNKNOWN, local=why),
                shadow=None,
                is_write=is_write,
                started_at=now,
                note=why,
            )
        )


_FIGURES = ("unsent", "cut_off", "unrecorded", "base", "envoy")


def _read(path: Path | None) -> tuple[int, int, int, int, str]:
    """The copies earlier planes counted as unseen, those this Envoy gave up on that they had taken, those
    counted unseen that they had not recorded yet, those counted before this Envoy, and its name."""
    if path is None or not path.exists():
        return 0, 0, 0, 0, ""
    try:
        counted = json.loads(path.read_text())
        return (
            int(counted["unsent"]),
            int(counted["cut_off"]),
            int(counted.get("unrecorded", 0)),
            int(counted.get("base", 0)),
            str(counted.get("envoy", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        _log.warning(
            "the copies earlier comparison planes counted are unreadable: counting from now", file=str(path)
        )
        return 0, 0, 0, 0, ""
