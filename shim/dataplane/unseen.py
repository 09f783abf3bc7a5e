"""The calls whose copies never reached the shim: counted from Envoy's stats, and recorded.

Envoy gives up on a copy when it cannot hand it over or the stream ends in an error (the processor was
down, or overloaded: `streams_failed`), and when the processor has not taken it all within
`deferred_close_timeout` (`streams_closed`). Less the copies the processor received first and then
lost, each recorded under its method (`shim.dataplane.processor`: a copy lost before its method was
known is not among them), that is the calls the shim never saw. Each becomes a skipped record under
`UNSEEN`: its method and keys are unknown, so every call there is unproven and the gate fails; the
evidence has a hole, and it shows.

Behind `shim serve`'s supervisor, a comparison plane that is started again goes on from what the
planes before it counted (a small JSON file beside Envoy's files), so that no gap is counted twice and
the one while no plane ran is counted once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from comparators import Code, Exchange, Outcome
from shim.dataplane.envoy_config import write_atomically

UNSEEN = "(calls the shim did not see)"  # the method the calls whose copies never arrived are recorded under
_MAX_PER_READ = 10_000
_log = structlog.get_logger("shim.dataplane")


class Unseen:
    """How many calls the shim has not seen, so far; persisted in `counted` when given."""

    def __init__(self, counted: Path | None = None) -> None:
        self._counted = counted
        self.unsent, self._cut_before = _read(counted)
        self._written = (self.unsent, self._cut_before)

    def update(self, given_up: int, taken: int) -> int:
        """The calls newly unseen, from the copies Envoy gave up on so far and those of them the processor
        took and recorded under their method (`taken`, since this plane started)."""
        cut = self._cut_before + taken
        now = max(self.unsent, given_up - cut)
        new, self.unsent = now - self.unsent, now
        if new:
            _log.warning(
                "Envoy could not hand copies of calls to the shim: they are not mirrored, and are recorded "
                f"as {UNSEEN!r}",
                copies=new,
                since_start=now,
            )
        if self._counted is not None and (now, cut) != self._written:
            write_atomically(self._counted, {"unsent": now, "cut_off": cut})
            self._written = (now, cut)
        return new


def record_unseen(submit: Callable[[Exchange], object], count: int) -> None:
    """One skipped record per call whose copy Envoy could not send, under `UNSEEN`."""
    now = time.time()
    why = (
        "not mirrored: Envoy could not hand this call's copy to the shim (the processor was down or "
        "overloaded); its method and keys are unknown"
    )
    for _ in range(min(count, _MAX_PER_READ)):
        submit(
            Exchange(
                method=UNSEEN,
                requests=(),
                primary=Outcome(code=Code.UNKNOWN, local=why),
                shadow=None,
                is_write=True,
                started_at=now,
                note=why,
            )
        )
    if count > _MAX_PER_READ:
        _log.error("calls the shim did not see, beyond those recorded", calls=count - _MAX_PER_READ)


def _read(path: Path | None) -> tuple[int, int]:
    """The copies earlier planes recorded as unseen, and those Envoy gave up on that they had taken."""
    if path is None or not path.exists():
        return 0, 0
    try:
        counted = json.loads(path.read_text())
        return int(counted["unsent"]), int(counted["cut_off"])
    except (OSError, ValueError, KeyError, TypeError):
        _log.warning(
            "the copies earlier comparison planes counted are unreadable: counting from now", file=str(path)
        )
        return 0, 0
