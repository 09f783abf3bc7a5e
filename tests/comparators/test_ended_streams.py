"""A stream its client ended (`Exchange.ended_after`): compared on the first answers each side sent, never on
the statuses; a side with fewer answers differs."""

from __future__ import annotations

import pytest

from comparators import Code, Verdict, compare
from tests.comparators._exchanges import answer, exchange

WATCH = "/watch.v1.Counters/Watch"
ENDED = "the client ended the stream after 2 answers: the first 2 answers of each side compared, not their"
ENDED += " statuses"


@pytest.mark.parametrize("primary_is_bank", [True, False], ids=["bank-primary", "bk-primary"])
@pytest.mark.parametrize(
    ("shadow", "verdict"),
    [
        (answer(b"a", b"b", code=Code.CANCELLED), Verdict.MATCH),  # cut by the shim once it sent as many
        (answer(b"a", b"b", b"c", code=Code.CANCELLED), Verdict.MATCH),  # one more before the cut took
        (answer(b"a", b"b", code=Code.INTERNAL, details="gone"), Verdict.MATCH),  # its status is not compared
        (answer(b"a", b"x", code=Code.CANCELLED), Verdict.MISMATCH),  # a different answer
        (answer(b"a", code=Code.OK), Verdict.MISMATCH),  # it ended by itself, one answer short
    ],
    ids=["same", "one-more", "own-status", "differs", "fewer"],
)
def test_a_stream_the_client_ended_is_compared_on_its_first_answers(
    shadow: object, verdict: Verdict, primary_is_bank: bool
) -> None:
    """The primary's two answers before the client's cancel against the shadow's first two: the reason says
    the client ended the stream and how many answers were compared."""
    primary = answer(b"a", b"b", code=Code.CANCELLED, local="the client ended the stream (2 sent)")
    ex = exchange(WATCH, primary, shadow, is_write=False, primary_is_bank=primary_is_bank, ended_after=2)
    comparison = compare(ex)
    assert (comparison.verdict, comparison.reason) == (verdict, ENDED), comparison


def test_a_stream_the_client_ended_with_a_difference_on_a_key_out_of_step_is_tainted() -> None:
    """A difference in a stream the client ended, on a key out of step, is tainted as any other."""
    primary = answer(b"a", code=Code.CANCELLED, local="the client ended the stream (1 sent)")
    ex = exchange(
        WATCH, primary, answer(b"x", code=Code.CANCELLED), is_write=False, ended_after=1, tainted="w"
    )
    assert (compare(ex).verdict, compare(ex).reason) == (Verdict.TAINTED, "w")
