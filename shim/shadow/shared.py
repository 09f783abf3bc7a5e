"""What every mirror of one shim shares: the shadow's channel, the bounds, the lanes, ids and marks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from comparators import Exchange
from comparators.redact import FreeTextOf
from comparators.rules import RuleSet
from shim._breaker import Breaker
from shim._lanes import Lanes
from shim._noise import Noise
from shim._translation import Translation
from shim.adapters import Channel
from shim.intents import Intents
from shim.metrics import Counters
from shim.plan import Plans
from shim.routing import Router
from shim.shadow.capture import Budget
from shim.shadow.lateness import KeyLateness
from shim.shadow.together import Together
from shim.steps import Steps
from shim.store.key_order import KeyOrder
from shim.verify import Verifier

Submit = Callable[[Exchange, Callable[[], None] | None], None]  # the exchange, and what to call once done


class Turn(Protocol):
    """When a call's steps in the lanes may run (`shim.dataplane.turns`)."""

    def enter(self, step: Callable[..., object], *args: Any) -> None: ...


class Turns(Protocol):
    """The turns of a data plane's two ways in: copies, and calls through the shim's own server."""

    def call(self, method: str) -> Turn: ...

    def copy(self, ordinal: int) -> Turn: ...


@dataclass(slots=True)
class Shared:
    channel: Channel  # to the shadow
    submit: Submit  # hands an exchange to the comparison pipeline
    counters: Counters
    translation: Translation  # keys, ids and aliases of requests and answers
    plans: Plans  # what to do with each method's calls
    lanes: Lanes
    breaker: Breaker
    budget: Budget  # shadow.max_capture_total
    timeout: float  # the shadow's time after the primary answered (or after it was sent, if later)
    max_wait: float  # a call's time in its lanes, behind earlier calls, after the primary answered
    max_capture: int  # bytes kept per exchange
    stream_hold: float  # a session's message holds its place this long once the primary answered past it
    stream_idle: float  # a stream idle this long gives its place to a call that needs it
    primary_is_bank: bool
    router: Router | None
    steps: Steps | None  # keys out of step
    intents: Intents | None  # writes' intents, for crash safety
    noise: Noise | None  # asks the primary again, to tell noise from differences
    verifier: Verifier | None = None  # checks keys out of step (set when [reconcile] reads exist)
    key_order: KeyOrder | None = None  # writes' order across replicas (ordering.across_replicas)
    # waits until every call the primary may have served by now has its place in the lanes (False: it did
    # not come in time); None where each call is admitted before the primary gets it (the Python data
    # plane). On Envoy the copies trail the primary's answers (`shim.dataplane`)
    arrived: Callable[[], Awaitable[bool]] | None = None
    # on Envoy: the calls through the shim's own server take their places after the copies received before
    # them, and the copies received after them after them (None: one way in, the Python data plane)
    turns: Turns | None = None
    # how late each key's writes went to each side (the shim's, across switches)
    lateness: KeyLateness = field(default_factory=KeyLateness)
    together: Together = field(default_factory=Together)  # the writes on each key in flight at the primary
    # with redaction: hashes the values of redacted fields a call's free text quotes (a mark's reason)
    free_text: FreeTextOf | None = None
    # the comparison rules in force (a reload changes them): a list they let BK answer in another order pairs
    # the ids it mints as its rule pairs its elements
    rules: Callable[[], RuleSet] | None = None
