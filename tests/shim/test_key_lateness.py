"""The keys' memory of how late their writes went (`shim.shadow.lateness`): the most per key and per side, for
writes from FLOOR late, within a bounded number of keys."""

from __future__ import annotations

from shim.shadow.lateness import FLOOR, KeyLateness, went


def test_a_read_is_allowed_the_most_its_keys_writes_went_late() -> None:
    memory = KeyLateness()
    assert memory.allowance(("a",), 3.0, write=True) == (3.0, 0.0)
    assert memory.allowance(("a",), 1.0, write=True) == (3.0, 0.0)  # the 3 s write's time is still there
    assert memory.allowance(("a", "b"), 0.002, write=False) == (3.0, 0.0)
    assert memory.allowance(("b",), 0.002, write=False) == (0.002, 0.0)  # a key no late write touched
    assert memory.allowance((), 0.5, write=False) == (0.5, 0.0)  # a call without keys: its own
    assert memory.allowance(("a",), 5.0, write=False) == (5.0, 0.0)  # a read later still: its own
    assert memory.allowance(("b",), 0.0, write=False) == (0.0, 0.0)  # a read remembers nothing
    assert len(memory) == 1


def test_each_sides_lateness_is_kept_apart() -> None:
    """While Bank is primary BK is late; once BK is primary, Bank is: a key keeps the most of each, and a
    call after a switch is allowed both, its own on the side that is the shadow now."""
    memory = KeyLateness()
    memory.allowance(("a",), 3.0, write=True, bk_is_shadow=True)
    assert memory.allowance(("a",), 0.5, write=False, bk_is_shadow=False) == (3.0, 0.5)
    assert memory.allowance(("a",), 2.0, write=True, bk_is_shadow=False) == (3.0, 2.0)
    assert memory.allowance(("a",), 0.0, write=False, bk_is_shadow=True) == (3.0, 2.0)
    assert memory.allowance(("a",), 0.0, write=False, known=(1.0, 4.0)) == (3.0, 4.0)  # across replicas
    assert went(1.0, bk_is_shadow=True) == (1.0, 0.0)
    assert went(1.0, bk_is_shadow=False) == (0.0, 1.0)
    assert went(FLOOR / 2, bk_is_shadow=True) == (0.0, 0.0)


def test_writes_hardly_late_are_not_remembered() -> None:
    memory = KeyLateness()
    assert memory.allowance(("a",), FLOOR / 2, write=True) == (FLOOR / 2, 0.0)
    assert len(memory) == 0
    assert memory.allowance(("a",), 0.0, write=False) == (0.0, 0.0)


def test_the_keys_remembered_are_bounded_oldest_forgotten_first() -> None:
    memory = KeyLateness(keys=3)
    for key in "abc":
        memory.allowance((key,), 1.0, write=True)
    memory.allowance(("a",), 0.5, write=True)  # a late write again: "a" is the most recent now
    memory.allowance(("d",), 2.0, write=True)
    assert len(memory) == 3
    assert memory.allowance(("b",), 0.0, write=False) == (0.0, 0.0)  # the oldest late write's key, forgotten
    assert [memory.allowance((k,), 0.0, write=False)[0] for k in "acd"] == [1.0, 1.0, 2.0]
