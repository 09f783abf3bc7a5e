"""`Together`: which writes on a key were in flight at the primary together, kept within bounds."""

from __future__ import annotations

import time

from shim.shadow import together as together_module
from shim.shadow.together import PER_KEY, Together


def test_writes_that_overlapped_on_a_key_name_each_other_and_others_name_nothing() -> None:
    now = time.time()
    spans = Together()
    first, second, later, elsewhere = object(), object(), object(), object()
    spans.answered(("K",), "/x.Y/Freeze", now, now + 1.0, first)
    spans.answered(("K",), "/x.Y/Deposit", now + 0.5, now + 0.6, second)  # sent before the freeze's answer
    spans.answered(("K",), "/x.Y/Deposit", now + 1.5, now + 1.6, later)  # sent once it was answered
    spans.answered(("L",), "/x.Y/Deposit", now + 0.5, now + 0.6, elsewhere)  # another key
    assert spans.reason(("K",), first).startswith(
        "in flight at the primary together with x.Y/Deposit on its key 'K'"
    )
    assert spans.reason(("K",), second).startswith("in flight at the primary together with x.Y/Freeze")
    assert spans.reason(("K",), later) == ""
    assert spans.reason(("L",), elsewhere) == ""
    assert spans.reason(("K",), object()) == "", "a write whose span is not known names nothing"
    # a write on two keys, one shared with an overlapping write
    both = object()
    spans.answered(("L", "K"), "/x.Y/Transfer", now + 1.55, now + 1.7, both)
    assert "on its key 'K'" in spans.reason(("L", "K"), both)


def test_the_memory_is_bounded_by_keys_writes_per_key_and_age() -> None:
    now = time.time()
    spans = Together(keys=3)
    for n in range(5):
        spans.answered((f"K{n}",), "/x.Y/W", now, now + 0.1, object())
    assert len(spans) == 3
    token = object()
    spans.answered(("K4",), "/x.Y/W", now + 10, now + 10.1, token)
    for n in range(PER_KEY + 5):
        spans.answered(("K4",), "/x.Y/W", now + 20 + n, now + 20.1 + n, object())
    assert len(spans._spans["K4"]) == PER_KEY
    assert spans.reason(("K4",), token) == "", "its span is forgotten, the oldest first"
    old = Together()
    old.answered(
        ("K",), "/x.Y/W", now - 2 * together_module.KEEP, now - 2 * together_module.KEEP + 1, object()
    )
    old.answered(("K",), "/x.Y/W", now, now + 1, object())
    assert len(old._spans["K"]) == 1, "a span older than KEEP is let go"


def test_a_write_still_in_flight_overlaps_every_write_after_its_start_until_it_is_answered_or_over() -> None:
    """A write takes its place in flight: a write answered meanwhile, started after it, overlapped it, though
    its own answer has not come; one over with no answer (its client cancelled) is in flight no more."""
    now = time.time()
    spans = Together()
    held, quick, after = object(), object(), object()
    spans.started(("K",), "/x.Y/Freeze", now, held)
    spans.answered(("K",), "/x.Y/Deposit", now + 0.1, now + 0.2, quick)
    assert "together with x.Y/Freeze" in spans.reason(("K",), quick)
    spans.over(("K",), held)
    spans.answered(("K",), "/x.Y/Deposit", time.time() + 1, time.time() + 1.1, after)
    assert spans.reason(("K",), after) == ""
    answered = object()
    spans.started(("L",), "/x.Y/W", now, answered)
    spans.answered(("L",), "/x.Y/W", now, now + 0.05, answered)
    spans.over(("L",), answered)  # the mirror's end after its answer changes nothing
    assert [(s.start, s.end) for s in spans._spans["L"]] == [(now, now + 0.05)]


def test_a_read_answered_while_a_write_on_one_of_its_keys_was_in_flight_names_that_write() -> None:
    """A read's span at the primary, against the writes' on its keys: one in flight during it (answered or
    not yet) is named; a write answered before the read was asked, or asked after it was answered, or on
    another key, is not."""
    now = time.time()
    spans = Together()
    spans.answered(("K",), "/x.Y/Deposit", now, now + 1.0, object())
    spans.started(("M",), "/x.Y/Freeze", now + 5.0, object())  # not answered yet
    assert spans.read_reason(("K",), now + 0.5, now + 0.6).startswith(
        "answered while x.Y/Deposit was in flight at the primary on its key 'K'"
    )
    assert spans.read_reason(("K",), now - 0.5, now + 0.1) != "", "asked before, answered during"
    assert spans.read_reason(("K",), now + 1.1, now + 1.2) == "", "asked once the write was answered"
    assert spans.read_reason(("K",), now - 0.2, now - 0.1) == "", "answered before the write started"
    assert spans.read_reason(("L",), now + 0.5, now + 0.6) == "", "another key"
    assert spans.read_reason(("L", "M"), now + 6.0, now + 6.1).startswith("answered while x.Y/Freeze")
    assert spans.read_reason(("M",), now + 4.0, now + 4.9) == "", "answered before the freeze started"


def test_a_read_with_no_key_names_a_write_in_flight_on_any_key_among_the_latest() -> None:
    """A read of every key (a listing with no key) against the latest writes' spans on any key: one in flight
    during it is named with its key; a write over before it, or one pushed out by `LATEST` newer writes, is
    not. A write over with no answer (`over`) is in flight no more there either."""
    now = time.time()
    spans = Together()
    held = object()
    spans.started(("K",), "/x.Y/Freeze", now, held)
    assert spans.read_reason((), now + 1.0, now + 1.1).startswith(
        "answered while x.Y/Freeze was in flight at the primary on key 'K' (the read has no key"
    )
    spans.over(("K",), held)
    assert spans.read_reason((), time.time() + 1.0, time.time() + 1.1) == "", "over: in flight no more"
    spans.answered(("L",), "/x.Y/Deposit", now + 2.0, now + 3.0, object())
    assert "x.Y/Deposit" in spans.read_reason((), now + 2.5, now + 2.6)
    for n in range(together_module.LATEST):
        spans.answered((f"M{n}",), "/x.Y/W", now + 10.0, now + 10.1, object())
    assert spans.read_reason((), now + 2.5, now + 2.6) == "", "pushed out by newer writes"
