"""Per-key lanes: which earlier calls each call waits for, and that nothing waits forever."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim._lanes import Lanes, Ticket

READ, WRITE = False, True


async def _turns(count: int) -> None:
    """Let the loop run `count` turns, so that done-callbacks chained through tickets have run.

    Nothing here waits for time: each turn runs what is already scheduled.
    """
    for _ in range(count):
        await asyncio.sleep(0)


def _ready(*tickets: Ticket) -> list[bool]:
    return [ticket.waiting_for == 0 for ticket in tickets]


async def test_a_write_waits_for_the_earlier_write_on_its_key() -> None:
    """A second write on a key waits for the first, and goes once the first is released."""
    lanes = Lanes()
    first, second = lanes.enter(["a"], WRITE), lanes.enter(["a"], WRITE)
    assert _ready(first, second) == [True, False]
    assert second.waiting_for == 1
    first.release()
    assert _ready(second) == [True]
    await asyncio.wait_for(second.ready(), timeout=5)


async def test_a_sessions_message_waits_for_what_came_between_its_messages_not_for_its_own() -> None:
    """A session's second message on a key does not wait for its first (one stream keeps their order on the
    other side), but does wait for a write that entered between them; a write after both waits for both;
    an unkeyed message of the session skips its own messages too."""
    lanes = Lanes()
    first = lanes.enter(["a"], WRITE)
    second = lanes.enter(["a"], WRITE, own=[first])
    assert _ready(first, second) == [True, True]
    between = lanes.enter(["a"], WRITE)
    third = lanes.enter(["a"], WRITE, own=[first, second])
    assert (between.waiting_for, third.waiting_for) == (2, 1)
    unkeyed = lanes.enter([], WRITE, own=[first, second, third])
    assert unkeyed.waiting_for == 1  # the write between
    first.release()
    second.release()
    assert _ready(between, third) == [True, False]
    between.release()
    assert _ready(third, unkeyed) == [True, True]


async def test_calls_on_different_keys_are_independent() -> None:
    """Writes on different keys never wait for one another."""
    lanes = Lanes()
    tickets = [lanes.enter([key], WRITE) for key in "abc"]
    assert _ready(*tickets) == [True, True, True]
    assert _ready(lanes.enter(["b"], READ)) == [False]


async def test_reads_between_two_writes_run_concurrently() -> None:
    """Reads after a write wait for it, not for each other; the next write waits for all of them."""
    lanes = Lanes()
    write = lanes.enter(["a"], WRITE)
    reads = [lanes.enter(["a"], READ) for _ in range(3)]
    after = lanes.enter(["a"], WRITE)
    assert _ready(*reads, after) == [False, False, False, False]
    write.release()
    assert _ready(*reads, after) == [True, True, True, False]
    assert after.waiting_for == 3
    for read in reads[:2]:
        read.release()
    assert after.waiting_for == 1
    reads[2].release()
    assert _ready(after) == [True]


async def test_a_write_after_reads_waits_for_every_one_of_them() -> None:
    """Reads that went first all have to be released before a write on their key may go."""
    lanes = Lanes()
    reads = [lanes.enter(["a"], READ) for _ in range(2)]
    write = lanes.enter(["a"], WRITE)
    assert _ready(*reads, write) == [True, True, False]
    reads[1].release()
    assert _ready(write) == [False]
    reads[0].release()
    assert _ready(write) == [True]


async def test_ready_completes_in_the_order_calls_are_released() -> None:
    """Calls waiting on one key go in entry order, each once the one before it is released."""
    lanes = Lanes()
    tickets = [lanes.enter(["a"], WRITE) for _ in range(4)]
    went: list[int] = []

    async def call(index: int) -> None:
        await tickets[index].ready()
        went.append(index)
        tickets[index].release()

    await asyncio.wait_for(asyncio.gather(*(call(i) for i in reversed(range(4)))), timeout=5)
    assert went == [0, 1, 2, 3]
    assert len(lanes) == 0


async def test_a_call_with_several_keys_follows_the_earlier_calls_of_each() -> None:
    """A write on a and b waits for the earlier write on a and the earlier write on b."""
    lanes = Lanes()
    on_a, on_b = lanes.enter(["a"], WRITE), lanes.enter(["b"], WRITE)
    both = lanes.enter(["a", "b"], WRITE)
    later_on_b = lanes.enter(["b"], READ)
    assert both.waiting_for == 2
    on_a.release()
    assert _ready(both, later_on_b) == [False, False]
    on_b.release()
    assert _ready(both, later_on_b) == [True, False]
    both.release()
    assert _ready(later_on_b) == [True]


async def test_an_unkeyed_write_is_a_barrier_both_ways() -> None:
    """An unkeyed write waits for every earlier call, and every later call (keyed or not) waits for it."""
    lanes = Lanes()
    earlier = [lanes.enter(["a"], WRITE), lanes.enter(["b"], READ), lanes.enter([], READ)]
    barrier = lanes.enter([], WRITE)
    later = [lanes.enter(["a"], READ), lanes.enter(["c"], WRITE), lanes.enter([], READ)]
    assert barrier.waiting_for == 3
    assert _ready(*later) == [False, False, False]
    for ticket in earlier:
        ticket.release()
    assert _ready(barrier, *later) == [True, False, False, False]
    barrier.release()
    assert _ready(*later) == [True, True, False]  # the unkeyed read also follows the write on c
    later[1].release()
    assert _ready(later[2]) == [True]


async def test_an_unkeyed_read_is_a_read_on_every_key() -> None:
    """An unkeyed read (a listing) waits for every earlier write, keyed or not; later writes wait for it."""
    lanes = Lanes()
    keyed = lanes.enter(["a"], WRITE)
    keyed_read = lanes.enter(["b"], READ)
    read = lanes.enter([], READ)
    keyed_after = lanes.enter(["c"], WRITE)
    read_after = lanes.enter(["a"], READ)
    assert read.waiting_for == 1  # the keyed write on a; reads do not wait for reads
    assert keyed_after.waiting_for == 1  # the unkeyed read
    assert read_after.waiting_for == 1  # the keyed write on a, not the unkeyed read
    keyed.release()
    keyed_read.release()
    assert _ready(read, read_after) == [True, True]
    assert _ready(keyed_after) == [False]
    read.release()
    assert _ready(keyed_after) == [True]
    for ticket in (keyed_after, read_after):
        ticket.release()
    assert len(lanes) == 0


async def test_crossed_multi_key_orders_do_not_deadlock() -> None:
    """Calls on (a, b) and (b, a), entered while both keys are busy, all go once the keys are released."""
    lanes = Lanes()
    busy = [lanes.enter(["a"], WRITE), lanes.enter(["b"], WRITE)]
    crossed = [lanes.enter(["a", "b"], WRITE), lanes.enter(["b", "a"], WRITE)] * 3
    went: list[int] = []

    async def call(index: int) -> None:
        await crossed[index].ready()
        went.append(index)
        crossed[index].release()

    tasks = [asyncio.ensure_future(call(i)) for i in range(len(crossed))]
    for ticket in busy:
        ticket.release()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert went == list(range(len(crossed)))
    assert len(lanes) == 0


async def test_lanes_are_dropped_once_every_call_is_released() -> None:
    """Keys do not pile up: once their calls are released, no lane is left."""
    lanes = Lanes()
    tickets = [lanes.enter([f"k{i % 5}"], i % 3 == 0) for i in range(20)]
    tickets.append(lanes.enter([], WRITE))
    assert len(lanes) > 0
    for ticket in tickets:
        ticket.release()
    assert len(lanes) == 0


async def test_releasing_twice_is_harmless() -> None:
    """A second release changes nothing: later calls keep waiting for the calls still in flight."""
    lanes = Lanes()
    first = lanes.enter(["a"], READ)
    second = lanes.enter(["a"], READ)
    write = lanes.enter(["a"], WRITE)
    first.release()
    first.release()
    assert write.waiting_for == 1
    second.release()
    second.release()
    assert _ready(write) == [True]
    write.release()
    write.release()
    assert len(lanes) == 0


async def test_a_call_given_up_while_waiting_still_holds_nothing_but_its_own_place() -> None:
    """A ticket released before its turn stops holding anyone: a later call on the same key still waits
    for the earlier call it conflicts with itself, directly."""
    lanes = Lanes()
    stuck = lanes.enter(["a"], WRITE)
    given_up = lanes.enter(["a"], WRITE)
    later = lanes.enter(["a"], WRITE)
    given_up.release()  # e.g. its client cancelled while it waited behind `stuck`
    await _turns(3)
    assert _ready(later) == [False]
    assert later.waiting_for == 1
    stuck.release()
    await asyncio.wait_for(later.ready(), timeout=5)
    later.release()
    assert len(lanes) == 0


async def test_a_skipped_call_releases_its_place_in_every_lane_at_once() -> None:
    """A call given up while it waits (skipped, timed out) no longer holds the calls behind it on its other
    keys: a write on b behind a given-up write on (a, b) goes at once, although a is still busy."""
    lanes = Lanes()
    stuck = lanes.enter(["a"], WRITE)  # e.g. a long stream on a
    given_up = lanes.enter(["a", "b"], WRITE)
    on_b = lanes.enter(["b"], WRITE)
    unkeyed_read = lanes.enter([], READ)
    assert _ready(given_up, on_b, unkeyed_read) == [False, False, False]
    given_up.release()
    await _turns(3)
    assert _ready(on_b) == [True]
    assert unkeyed_read.waiting_for == 2  # the stuck write on a, and the write on b: both directly
    for ticket in (stuck, on_b, unkeyed_read):
        ticket.release()
    assert len(lanes) == 0


async def test_an_unkeyed_write_given_up_lets_later_calls_go_but_not_past_what_it_followed() -> None:
    """An unkeyed write skipped while it waits for a long call on a lets later calls on other keys go at
    once; a later unkeyed write still waits for the long call itself."""
    lanes = Lanes()
    long_call = lanes.enter(["a"], WRITE)
    unkeyed = lanes.enter([], WRITE)
    on_b = lanes.enter(["b"], WRITE)
    unkeyed_after = lanes.enter([], WRITE)
    unkeyed.release()
    await _turns(3)
    assert _ready(on_b, unkeyed_after) == [True, False]
    assert unkeyed_after.waiting_for == 2  # the long call and the write on b
    for ticket in (long_call, on_b, unkeyed_after):
        ticket.release()
    assert len(lanes) == 0


# ---- model check: lanes against a reference of who must wait for whom ---------------------------

Call = tuple[frozenset[str], bool]  # (keys, write)


def _conflict(earlier: Call, later: Call) -> bool:
    """Whether `later` must follow `earlier`, as the lanes' docstring says."""
    (earlier_keys, earlier_write), (later_keys, later_write) = earlier, later
    # an unkeyed call is a call on every key
    share = not earlier_keys or not later_keys or bool(earlier_keys & later_keys)
    return share and (earlier_write or later_write)


def _done(calls: Sequence[Call], released: Sequence[bool]) -> list[bool]:
    """A call is done when it is released: a call given up before its turn holds nobody behind it."""
    return list(released[: len(calls)])


CALLS = st.lists(
    st.tuples(st.frozensets(st.sampled_from("abc"), max_size=2), st.booleans()), min_size=1, max_size=10
)


@settings(max_examples=200, deadline=None)
@given(calls=CALLS, data=st.data())
def test_lanes_agree_with_the_reference_under_any_release_schedule(
    calls: list[Call], data: st.DataObject
) -> None:
    """Whatever the order of entering and releasing (even before its turn), a call is ready exactly
    when every earlier conflicting call is released, and no lane is left at the end."""

    async def scenario() -> None:
        lanes = Lanes()
        tickets: list[Ticket] = []
        released: list[bool] = []
        while len(tickets) < len(calls) or not all(released):
            choices = [i for i, r in enumerate(released) if not r]
            if len(tickets) < len(calls):
                choices.append(-1)  # enter the next call
            choice = data.draw(st.sampled_from(choices))
            if choice == -1:
                keys, write = calls[len(tickets)]
                tickets.append(lanes.enter(sorted(keys), write))
                released.append(False)
            else:
                tickets[choice].release()
                released[choice] = True
            await _turns(len(calls) + 1)
            entered = calls[: len(tickets)]
            done = _done(entered, released)
            expected = [
                all(done[e] for e in range(i) if _conflict(entered[e], call))
                for i, call in enumerate(entered)
            ]
            assert _ready(*tickets) == expected
        assert len(lanes) == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("earlier", "later", "follows"),
    [
        pytest.param((frozenset("a"), WRITE), (frozenset("a"), READ), True, id="read-after-write"),
        pytest.param((frozenset("a"), READ), (frozenset("a"), READ), False, id="read-after-read"),
        pytest.param((frozenset("a"), READ), (frozenset("ab"), WRITE), True, id="write-after-read"),
        pytest.param((frozenset("a"), WRITE), (frozenset("b"), WRITE), False, id="other-key"),
        pytest.param((frozenset(), WRITE), (frozenset("b"), READ), True, id="after-unkeyed-write"),
        pytest.param((frozenset("b"), READ), (frozenset(), WRITE), True, id="unkeyed-write-after"),
        pytest.param((frozenset(), READ), (frozenset("b"), WRITE), True, id="keyed-write-after-unkeyed-read"),
        pytest.param((frozenset("b"), WRITE), (frozenset(), READ), True, id="unkeyed-read-after-keyed-write"),
        pytest.param((frozenset("b"), READ), (frozenset(), READ), False, id="unkeyed-read-after-keyed-read"),
    ],
)
async def test_two_calls_wait_as_the_reference_says(earlier: Call, later: Call, follows: bool) -> None:
    """For each pair of call kinds, the later waits for the earlier exactly when the reference says so."""
    assert _conflict(earlier, later) is follows
    lanes = Lanes()
    lanes.enter(sorted(earlier[0]), earlier[1])
    assert lanes.enter(sorted(later[0]), later[1]).waiting_for == int(follows)


async def test_written_since_tells_whether_a_write_on_the_keys_came_after_a_point() -> None:
    """A write on a key is seen from a point taken before it, on that key only; an unkeyed question sees
    any write; a lane emptied since still remembers its last write."""
    lanes = Lanes()
    point = lanes.write_seq
    assert not lanes.written_since(("A",), point)
    ticket = lanes.enter(("A",), write=True)
    ticket.release()
    assert len(lanes) == 0  # the lane is gone ...
    assert lanes.written_since(("A",), point)  # ... its last write is remembered
    assert not lanes.written_since(("B",), point)
    assert lanes.written_since((), point)
    later = lanes.write_seq
    lanes.enter(("B",), write=False).release()
    assert not lanes.written_since(("A", "B"), later)
    assert not lanes.written_since((), later)
