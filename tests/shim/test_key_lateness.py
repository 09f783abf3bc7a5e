"""The keys' memory of how late their writes went (`shim.shadow.lateness`): the most per key, per side and
per band of lateness, with when the band's last write was over, for writes from FLOOR late, within a bounded
number of keys."""

from __future__ import annotations

import time

from shim.shadow.lateness import FLOOR, KeyLateness, went
from shim.store.key_order import FLOORS, NOT_LATE, Late, bands, late_of


def _late(allowed: Late) -> tuple[float, float]:
    """BK's and Bank's most lateness, over every band."""
    return max([0.0, *(bk for _, bk, _ in bands(allowed))]), max(
        [0.0, *(bank for _, _, bank in bands(allowed))]
    )


def test_a_call_is_allowed_the_most_its_keys_writes_went_late_and_not_its_own() -> None:
    """The call's own lateness is its own (the caller adds it): the keys' share is the writes' before it."""
    memory = KeyLateness()
    assert memory.allowance(("a",), 3.0, write=True) == NOT_LATE  # nothing before it
    assert _late(memory.allowance(("a",), 1.0, write=True)) == (3.0, 0.0)  # the 3 s write's time is there
    assert _late(memory.allowance(("a", "b"), 0.002, write=False)) == (3.0, 0.0)
    assert memory.allowance(("b",), 0.002, write=False) == NOT_LATE  # a key no late write touched
    # a call without keys may read any key's times: every write's lateness, by band
    assert _late(memory.allowance((), 0.5, write=False)) == (3.0, 0.0)
    assert len(memory) == 1
    fresh = KeyLateness()
    assert fresh.allowance((), 0.5, write=False) == NOT_LATE  # no write went late yet
    fresh.allowance((), 2.0, write=True)  # a late write with no key: every call without keys after it
    assert _late(fresh.allowance((), 0.0, write=False)) == (2.0, 0.0)
    assert fresh.allowance(("a",), 0.0, write=False) == NOT_LATE  # a key's own writes alone, for a keyed call
    assert len(fresh) == 0


def test_each_band_says_when_its_last_write_was_over() -> None:
    """A time stamped after the last late write of a band was over was stamped by none of them: each band
    keeps when that was (time.time() as each was remembered), so that writes a little late after a very
    late one do not carry its lateness on."""
    memory = KeyLateness()
    before = time.time()
    memory.allowance(("a",), 3.0, write=True)
    ((first, bk, _),) = bands(memory.allowance(("a",), 0.0, write=False))
    assert (bk, before <= first <= time.time()) == (3.0, True)
    memory.allowance(("a",), 0.05, write=True)  # a little late, over later: a band of its own
    (top, top_bk, _), (low, low_bk, _) = bands(memory.allowance(("a",), 0.0, write=False))
    assert (top, top_bk, low_bk, low >= first) == (first, 3.0, 0.05, True)
    memory.allowance(("a",), 2.0, write=True)  # very late again: the top band's end moves on, its most stays
    end, most_bk, _ = bands(memory.allowance(("a",), 0.0, write=False))[0]
    assert (most_bk, end >= low) == (3.0, True)


def test_a_lateness_goes_to_its_band() -> None:
    for late, band in ((5.0, 0), (FLOORS[0], 0), (0.5, 1), (0.02, 2)):
        one = late_of(late, bk_is_shadow=True, until=7.0)
        assert bands(one) == [(7.0, late, 0.0)]
        assert one[3 * band : 3 * band + 3] == (late, 0.0, 7.0)
    assert late_of(FLOOR / 2, bk_is_shadow=True, until=7.0) == NOT_LATE


def test_each_sides_lateness_is_kept_apart() -> None:
    """While Bank is primary BK is late; once BK is primary, Bank is: a key keeps the most of each."""
    memory = KeyLateness()
    memory.allowance(("a",), 3.0, write=True, bk_is_shadow=True)
    assert _late(memory.allowance(("a",), 2.0, write=True, bk_is_shadow=False)) == (3.0, 0.0)
    assert _late(memory.allowance(("a",), 0.0, write=False, bk_is_shadow=True)) == (3.0, 2.0)
    known = late_of(4.0, bk_is_shadow=False, until=1.0)
    assert _late(memory.allowance(("a",), 0.0, write=False, known=known)) == (3.0, 4.0)  # across replicas
    assert _late(went(1.0, bk_is_shadow=True)) == (1.0, 0.0)
    assert _late(went(1.0, bk_is_shadow=False)) == (0.0, 1.0)
    assert went(FLOOR / 2, bk_is_shadow=True) == NOT_LATE


def test_writes_hardly_late_are_not_remembered() -> None:
    memory = KeyLateness()
    memory.allowance(("a",), FLOOR / 2, write=True)
    assert len(memory) == 0
    assert memory.allowance(("a",), 0.0, write=False) == NOT_LATE


def test_the_keys_remembered_are_bounded_oldest_forgotten_first() -> None:
    memory = KeyLateness(keys=3)
    for key in "abc":
        memory.allowance((key,), 1.0, write=True)
    memory.allowance(("a",), 0.5, write=True)  # a late write again: "a" is the most recent now
    memory.allowance(("d",), 2.0, write=True)
    assert len(memory) == 3
    assert memory.allowance(("b",), 0.0, write=False) == NOT_LATE  # the oldest late write's key, forgotten
    assert [_late(memory.allowance((k,), 0.0, write=False))[0] for k in "acd"] == [1.0, 1.0, 2.0]
