"""A read's stream its client ended (a watch: it never ends by itself), compared on what the primary sent.

A server-streaming read the client cancels (or whose deadline passes) once the primary sent some answers is
compared on those answers: the shadow's call is given until it has sent as many (within the shadow timeout,
as any call once the primary answered), then cut, and the first that many answers of each side are compared,
never their statuses (the client ended the call, not the servers: `Exchange.ended_after`). A shadow that
sent fewer within the timeout answered less than the primary in the time a call is given: a shadow timeout,
as a shadow too slow to answer any call is; one whose stream ended by itself with fewer is a real difference
(its answers one or more short). A stream the primary sent nothing on is not compared, as before; a write's
is never compared this way (the client's cancel leaves both sides' outcomes unknown).

Before, every such stream was `skipped` (cancelled by the client; on Envoy, its copy lost): no watch was
ever compared (`tests/shim/test_watch_ended.py`, both data planes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from comparators import Code, Outcome
from shim.plan import MethodPlan


@dataclass(slots=True)
class Watch:
    """How far the shadow's stream got, once the client ended the primary's."""

    ended_after: int = 0  # the primary's answers when the client ended its stream (0: it did not)
    answers: int = 0  # the shadow's answers so far
    enough: bool = False  # the shadow sent as many: the shim cut its call there

    def timeout_note(self, timeout: float) -> str:
        """A shadow timeout's note, for a shadow that did not answer as much as the primary in time."""
        return (
            f"shadow timeout: {self.answers} of the primary's {self.ended_after} answers within {timeout:g}s"
            " after the client ended the stream"
        )


def within_deadline(watch: Watch, shadow: Outcome, late: bool) -> Outcome:
    """The shadow's outcome of a read's stream the client's deadline ended, the shadow's call having carried
    that deadline too (`late`: it ended the shadow's call): its answers are compared, once it sent as many as
    the primary did before the deadline; fewer is no answer within the client's deadline, as before."""
    if watch.ended_after and late and len(shadow.messages) >= watch.ended_after:
        return replace(shadow, local="")
    return shadow


def ended_watch(plan: MethodPlan, primary: Outcome | None, answers: int, kept: bool) -> Outcome | None:
    """The primary's outcome to compare a read's stream its client ended on, if it is one: a server-streaming
    read (one request), the primary having sent `answers` (at least one), all of them in `primary` and `kept`
    for the comparison. None: the call is not compared (cancelled, as any other)."""
    kind = plan.kind
    if plan.write or not kind.server_streaming or kind.client_streaming or primary is None:
        return None
    if not answers or len(primary.messages) != answers or not kept:
        return None
    return replace(
        primary, code=Code.CANCELLED, details="", local=f"the client ended the stream ({answers} sent)"
    )
