"""The shadow side's settings: [shadow] (how much is mirrored at once, and kept) and [ordering] (the
order mirrored calls reach the shadow in, `shim._lanes`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import BOOL, POSITIVE, SIZE, duration, setting


@dataclass(frozen=True, slots=True)
class ShadowSettings:
    """The bounds of mirroring: calls at once, bytes kept, the breaker, and shedding under load."""

    SECTION: ClassVar[str] = "shadow"
    max_in_flight: int = setting(
        1000, POSITIVE, "mirrored calls at once; beyond that a call is not mirrored (and that is recorded)"
    )
    max_in_flight_streams: int = setting(
        0,
        POSITIVE,
        "of those, places streaming calls may take: one-message calls always find room",
        shown="half of `max_in_flight`",
    )
    max_capture: int = setting(64 * 1024**2, SIZE, "request and answer bytes kept per call for comparison")
    max_capture_total: int = setting(
        256 * 1024**2,
        SIZE,
        "... and across all calls, with the requests waiting for BK; beyond it a call is compared no further,"
        " or given up if its request cannot wait",
    )
    stream_idle: float = setting(
        30.0, duration(), "a stream idle this long gives its place to a call that needs it"
    )
    breaker_failures: int = setting(
        5,
        POSITIVE,
        "shadow failures in a row (unreachable, no answer in time) that stop mirroring for a while",
    )
    breaker_open_for: float = setting(
        5.0, duration(), "then one call probes the shadow; an answer resumes mirroring"
    )
    shed_lag: float = setting(
        0.05,
        duration(),
        "the shim's event loop this late: mirrored reads are shed (0: never; behind Envoy, only while a "
        "method's calls go through Python, and also reads whose copies it takes up 4/5 of Envoy's hold late, "
        "and at Envoy every read while it takes many copies up half of that hold late); writes never are",
        reloadable=True,
    )

    def __post_init__(self) -> None:
        """Places for streams within the places for calls are no more than those: they would never apply.
        (max_capture may exceed max_capture_total: a call then holds what the total leaves it.)"""
        if self.max_in_flight_streams > self.max_in_flight:
            raise ConfigError(
                f"shadow.max_in_flight_streams: {self.max_in_flight_streams} is more than"
                f" shadow.max_in_flight ({self.max_in_flight})"
            )


@dataclass(frozen=True, slots=True)
class OrderingSettings:
    """The order mirrored calls reach the shadow in: one key's writes one at a time (`docs/ordering.md`)."""

    SECTION: ClassVar[str] = "ordering"
    strict: bool = setting(False, BOOL, "true: unary writes also reach the primary one at a time per key")
    stream_hold: float = setting(
        0.5,
        duration(),
        "a session's message the shadow's answers do not release holds its keys this long once the primary"
        " answered past it (at most the shadow timeout once sent, the primary answering nothing past it); a"
        " read's stream holds them this long once the shadow answered as much as the primary, which sent"
        " nothing more",
    )
    max_wait: float = setting(
        30.0,
        duration(at_least=0.001),
        "a mirrored call may wait this long behind earlier calls on its keys after the primary answered "
        "(the shadow's timeout then counts from when it is sent)",
    )
    across_replicas: bool = setting(
        False,
        BOOL,
        "true: one key's writes reach the shadow in order across the replicas sharing a store (PostgreSQL; a"
        " SQLite file for processes of one machine), and a read reaches it after the writes on its keys"
        " answered before it (docs/fleet-order.md)",
    )
    clock_skew: float = setting(
        0.001,
        duration(at_most=1.0),
        "with across_replicas on Envoy: how far the clocks of the replicas' machines may differ; a write"
        " whose ticket follows one started less than this before its own answer is marked out of step",
    )
    across_workers: bool = setting(
        True,
        BOOL,
        "with serving.workers > 1: the workers order one key's writes across each other through their store,"
        " as across_replicas does; false: each worker orders only its own calls",
    )

    def check_store(self, url: str, workers: int) -> None:
        """`across_replicas` orders writes through a store the replicas share, as do `workers` processes
        that mirror (1 when they do not)."""
        if workers > 1 and url == ":memory:":
            raise ConfigError(
                "serving.workers: workers mirroring to BK need a store they share (a SQLite file or"
                ' "postgresql://..."): with store.url ":memory:" each would keep its own id pairs, keys out'
                " of step and order"
            )
        if self.across_replicas and url == ":memory:":
            raise ConfigError(
                'ordering.across_replicas needs a store the replicas share: "postgresql://..." for a fleet,'
                ' or a SQLite file for the processes of one machine; ":memory:" is one process\'s own'
            )

    def of_workers(self, workers: int) -> OrderingSettings:
        """These settings in each of `workers` workers: ordered across them, unless `across_workers` is
        false."""
        if workers > 1 and self.across_workers and not self.across_replicas:
            return replace(self, across_replicas=True)
        return self
