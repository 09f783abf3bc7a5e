"""A replayed call's messages, handed to its mirror in the order they came live.

A unary call's request and answer go at once. A stream recorded with its interleaving (`request_times`,
`answers_after`: a call of several request messages) is fed as it came: each request message once the
replay has started every call that arrived before it, so it takes its place in its keys' lanes among
those calls as it did live; and each of Bank's answers once the requests Bank had been sent when it
came are fed, so BK's answers release the stream's messages as Bank's did (`docs/ordering.md`).
Each of its answers has its own clock offset (`message_offsets`): its messages go to BK sooner or later
than they came live.
"""

from __future__ import annotations

from collections.abc import Sequence

from comparators import Outcome
from shim.recording.format import RecordedCall
from shim.shadow.mirror import Mirror


def message_offsets(call: RecordedCall, sent_at: float, sent_times: Sequence[float]) -> tuple[float, ...]:
    """For each of Bank's answers to a session fed as it came, how much later than live BK's clock runs
    for it: the request it followed went to BK at `sent_times[k - 1]`, and had come live at
    `at + request_times[k - 1]` (for an answer before any request, the call itself: `sent_at` and `at`).
    Empty for any other call: one offset holds for all its answers."""
    if not call.answers_after or not call.request_times:
        return ()
    whole = sent_at - call.at
    return tuple(
        sent_times[k - 1] - (call.at + call.request_times[k - 1]) if 0 < k <= len(sent_times) else whole
        for k in call.answers_after
    )


class Feed:
    """One call's messages, fed to its mirror by `until`."""

    __slots__ = ("_answered", "_sent", "call", "mirror")

    def __init__(self, mirror: Mirror, call: RecordedCall) -> None:
        self.mirror = mirror
        self.call = call
        self._sent = 0  # request messages fed
        self._answered = 0  # Bank's answers fed

    def next_at(self) -> float | None:
        """When its next request message to feed came live (None: none is left, or no times were kept)."""
        times = self.call.request_times
        return self.call.at + times[self._sent] if self._sent < len(times) else None

    def until(self, at: float | None) -> bool:
        """Feed the request messages that came before `at` (None: all of them), and the answers that came
        after them; True once the whole call is fed (its status included)."""
        call, mirror, times = self.call, self.mirror, self.call.request_times
        while self._sent < len(call.requests):
            if at is not None and times and call.at + times[self._sent] >= at:
                self._answer(closed=False)
                return False
            self._answer(closed=False)
            mirror.feed(call.requests[self._sent])
            self._sent += 1
        mirror.close_requests()
        self._answer(closed=True)
        mirror.primary_done(
            Outcome(
                code=call.code,
                details=call.details,
                initial_metadata=call.initial_metadata,
                trailing_metadata=call.trailing_metadata,
                messages=call.responses,
                latency=call.latency,
            )
        )
        return True

    def _answer(self, *, closed: bool) -> None:
        """Bank's answers that came with no more requests sent than are fed (without their interleaving
        recorded: once the requests are all fed)."""
        call, after = self.call, self.call.answers_after
        while self._answered < len(call.responses):
            if (after[self._answered] > self._sent) if after else not closed:
                return
            answer = call.responses[self._answered]
            self.mirror.primary_message(answer)
            self.mirror.capture.take(answer)
            self._answered += 1
