"""A write's tickets on its keys (and where a read stands on them), as `key_order.KeyOrder` issues them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

# How much later BK, and Bank, may have stamped the times a key holds: writes mirrored late to the side that
# was the shadow then. Kept by band of lateness (from FLOORS[i] seconds up to the band above): per band, each
# side's most, and when the band's last write was over (time.time()), the times stamped after which none of
# that band's writes stamped. So a write a second late is not taken to have stamped the times of the writes
# a few milliseconds late that follow it. Flat, for the store's columns (LATE_COLUMNS) and for `most`.
FLOORS = (1.0, 0.1, 0.01)
Late = tuple[float, ...]  # (BK's, Bank's, until) of each band in turn
NOT_LATE: Late = (0.0,) * (3 * len(FLOORS))
LATE_COLUMNS = tuple(
    f"{name}{f'_{band}' if band else ''}"
    for band in range(len(FLOORS))
    for name in ("late", "late_bank", "late_until")
)


def most(one: Late, other: Late) -> Late:
    """Each band's lateness of both, and the later end: commutative, as the store's merge is."""
    return tuple(map(max, one, other))


def late_of(late: float, bk_is_shadow: bool, until: float) -> Late:
    """A write `late` to the shadow (BK, or Bank when it is not `bk_is_shadow`), over at `until`."""
    for band, floor in enumerate(FLOORS):
        if late >= floor:
            one = [0.0] * len(NOT_LATE)
            one[3 * band + (0 if bk_is_shadow else 1)] = late
            one[3 * band + 2] = until
            return tuple(one)
    return NOT_LATE


def bands(late: Late) -> list[tuple[float, float, float]]:
    """(until, BK's, Bank's) of each band that holds a lateness."""
    return [(late[i + 2], late[i], late[i + 1]) for i in range(0, len(late), 3) if late[i] or late[i + 1]]


def late_from(values: Sequence[Any]) -> Late:
    """A Late from the store's LATE_COLUMNS, in order (NULL: 0)."""
    return tuple(float(value or 0.0) for value in values)


_log = structlog.get_logger("shim.store.key_order")


# seconds a write's start is kept, by ticket, for the reads compared after it (`KeyOrder.raced`): longer than
# a read takes to be compared, its shadow's timeout included
STARTS_KEPT = 300.0


@dataclass(frozen=True, slots=True)
class Held:
    """One ticket on one key; `wait` is False when ticket - 1 needs no waiting for in the store."""

    key: str
    ticket: int
    wait: bool
    before: float = 0.0  # the latest start (time.time()) of a call whose ticket on the key came before
    late: Late = NOT_LATE  # the most lateness of the writes done on the key when the ticket was issued


Finish = Callable[[tuple[Held, ...], Late], None]  # marks tickets done, by a write that went this late


class Tickets:
    """One write's tickets, one per key: `taken` once the store issued them (or failed: `error`).

    A read's (`read`) are no tickets but marks of where it stands: on each key, `held.ticket - 1` is the
    last ticket issued before it, which it waits for; it raises no counter and is never done."""

    __slots__ = (
        "_finish", "_released", "error", "held", "keys", "late", "method", "read", "started", "taken",
    )  # fmt: skip

    def __init__(
        self,
        keys: tuple[str, ...],
        method: str,
        finish: Finish,
        read: bool = False,
        started: float | None = None,
    ) -> None:
        self._finish = finish
        # the call's start: as its data plane saw it (Envoy's, on a copy), else as it asks for its place
        self.started = time.time() if started is None else started
        self.keys = keys
        self.method = method
        self.read = read
        self.held: tuple[Held, ...] = ()
        self.error = ""
        self.taken = asyncio.Event()
        self._released = False
        self.late = NOT_LATE  # how late the write went to the shadow, left on its keys once done

    def release(self, late: Late = NOT_LATE) -> None:
        """The write is over on the shadow (or given up), having gone to it `late` (BK's, Bank's): its tickets
        are done, now or once issued."""
        if not self._released and not self.read:
            self._released = True
            self.late = late
            self._finish(self.held, late)

    def _issued(self, held: tuple[Held, ...], error: str = "") -> None:
        self.held, self.error = held, error
        self.taken.set()
        if self._released and not self.read:
            self._finish(held, self.late)


class Asking:
    """The tickets asked for in one statement, in the order asked: its parameters, and the tickets it
    issues from the rows it returns (key, issued, done, the replica of the last ticket before)."""

    def __init__(self, asked: Sequence[Tickets]) -> None:
        self._asked = asked
        self._count: dict[str, int] = {}  # tickets asked per key (reads ask none)

    def params(self) -> dict[str, Any]:
        keys: list[str] = []
        methods: list[str] = []
        nth: list[int] = []
        starts: list[float] = []
        read_keys: set[str] = set()
        for tickets in self._asked:
            if tickets.read:
                read_keys.update(tickets.keys)
                continue
            for key in tickets.keys:
                self._count[key] = self._count.get(key, 0) + 1
                keys.append(key)
                methods.append(tickets.method)
                nth.append(self._count[key])
                starts.append(tickets.started)
        return {
            "keys": keys, "methods": methods, "nth": nth, "starts": starts, "read_keys": sorted(read_keys),
        }  # fmt: skip

    def issue(self, rows: Sequence[tuple[Any, ...]], me: str) -> None:
        """Each ticket N needs no wait in the store when N - 1 was `me`'s (its lanes order the two) or
        was done when N was issued; a read stands where the next ticket would be. Each has the latest
        start of the calls whose tickets came before it (`Held.before`), and the key's lateness so far."""
        first = {
            key: (
                issued - self._count.get(key, 0) + 1, done, prev, float(before or 0.0),
                late_from(late),
            )
            for key, issued, done, prev, before, *late in rows
        }  # fmt: skip
        given: dict[str, int] = {}
        latest: dict[str, float] = {}  # by key: the latest start before the next ticket of the statement
        for tickets in self._asked:
            held = []
            for key in tickets.keys:
                start, done, prev, before, late = first.get(key, (1, 0, "", 0.0, NOT_LATE))  # never written
                before = max(before, latest.get(key, 0.0))
                ticket = start + given.get(key, 0)
                if not tickets.read:
                    given[key] = given.get(key, 0) + 1
                    latest[key] = max(before, tickets.started)
                mine_before = ticket > start or prev == me
                wait = not mine_before and done < ticket - 1
                held.append(Held(key, ticket, wait=wait, before=before, late=late))
            tickets._issued(tuple(held))


async def unknown(book: Any, mine: dict[str, set[int]], finish: Callable[..., None]) -> list[Tickets]:
    """The tickets the store says this replica holds and no write of its knows (a ticket statement committed
    whose answer was lost), as Tickets to mark done in their turn; `mine` (the replica's tickets by key)
    takes them in."""
    known = {key: set(tickets) for key, tickets in mine.items()}  # as before the read
    found = []
    for key, ticket, method in await book.mine():
        if ticket in known.get(key, ()):
            continue
        _log.warning("ticket taken without this replica's knowing: done in its turn", key=key, ticket=ticket)
        mine.setdefault(key, set()).add(ticket)
        lost = Tickets((key,), method, finish)
        lost._issued((Held(key, ticket, wait=True),))
        found.append(lost)
    return found


async def cut(book: Any, tasks: Sequence[asyncio.Task[None]]) -> None:
    """End a closing key order's `tasks` at once: the connections of its `book` are closed outright first,
    so that a statement under way fails at once, where a statement cancelled on a connection still open
    would wait on a database that does not answer (psycopg asks the server to cancel it, up to 5 s, then
    waits up to 5 s more for it to end)."""
    await book.abort()
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


def unwritten(done: dict[str, int], within: float | None) -> None:
    """Log the tickets done a closing key order could not write in `within` seconds (by key, the highest)."""
    if done:
        _log.warning(
            "tickets done not written: the store did not answer in time; they are released with this"
            " replica's heartbeat",
            keys=len(done),
            within_s=within,
        )
