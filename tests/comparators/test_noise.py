"""Noise: which second answers of Bank's are samples of how its answers vary, and what they show."""

from __future__ import annotations

import pytest

from comparators import Outcome, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.comparators._exchanges import GET_BALANCE, NOT_FOUND, REGISTRY, UNAVAILABLE, answer, exchange

DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION = 4, 8, 9
BALANCE = pb.Balance(account_id="A1", currency="EUR", cash="100.00")


@pytest.mark.parametrize(
    "again",
    [
        Outcome(code=DEADLINE_EXCEEDED, details="Deadline Exceeded"),
        Outcome(code=UNAVAILABLE, details="shedding load"),
        Outcome(code=RESOURCE_EXHAUSTED, details="too many calls"),
    ],
    ids=["timed-out", "unavailable", "resource-exhausted"],
)
def test_a_second_answer_with_another_status_is_no_noise_sample(again: Outcome) -> None:
    """Bank's second ask failed where its first answered: no noise, and not a call asked twice, so BK's
    refusals are never excused by how often Bank's second asks fail."""
    refused = Outcome(code=FAILED_PRECONDITION, details="account frozen")
    comparison = compare(
        exchange(GET_BALANCE, answer(BALANCE), refused, is_write=False, secondary=again), REGISTRY
    )
    assert comparison.noise == ()
    assert not comparison.noise_sampled
    assert {d.path for d in comparison.differences} >= {"status.code"}


def test_a_first_answer_failed_and_a_second_answered_is_no_noise_sample() -> None:
    """The reverse too: Bank refused the first ask and answered the second."""
    first = Outcome(code=NOT_FOUND, details="no such account")
    comparison = compare(
        exchange(GET_BALANCE, first, first, is_write=False, secondary=answer(BALANCE)), REGISTRY
    )
    assert comparison.noise == ()
    assert not comparison.noise_sampled


def test_two_answers_with_one_status_are_a_noise_sample() -> None:
    """Two refusals with one code whose wording differs are a sample: the wording is noise."""
    first = Outcome(code=NOT_FOUND, details="no such account (req 1)")
    again = Outcome(code=NOT_FOUND, details="no such account (req 2)")
    comparison = compare(exchange(GET_BALANCE, first, first, is_write=False, secondary=again), REGISTRY)
    assert comparison.noise_sampled
    assert [d.path for d in comparison.noise] == ["status.details"]
