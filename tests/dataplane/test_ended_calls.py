"""Envoy's records of calls whose client went away end their copies: a record before the copy's request
headers waits for them; one for a copy done with, for no copy, or for a call two copies both name, ends
nothing; records never wait for copies without bound."""

from __future__ import annotations

import asyncio

import pytest

from shim._proto.shim.v1 import access_log_pb2 as pb
from shim.dataplane import ended
from shim.dataplane.ended import EndedCalls, key_of
from tests.helpers import until

KEY = ("1733600000.123456", "127.0.0.1:50123", "/tally.v1.Tally/Append")


async def test_a_record_ends_the_copy_it_names_whether_it_comes_before_or_after_the_copy() -> None:
    calls, ended_copies = EndedCalls(), []
    calls.opened(KEY, lambda: ended_copies.append("after"))
    calls.ended(KEY)
    early = (KEY[0], KEY[1], "/tally.v1.Tally/List")
    calls.ended(early)  # its copy's headers not read yet
    calls.opened(early, lambda: ended_copies.append("before"))
    await until(lambda: len(ended_copies) == 2, "both copies ended")
    assert sorted(ended_copies) == ["after", "before"]


async def test_a_record_of_a_copy_done_with_ends_nothing_and_records_are_kept_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls, ended_copies = EndedCalls(), []
    calls.opened(KEY, lambda: ended_copies.append("done with"))
    calls.closed(KEY)
    calls.ended(KEY)
    other = (KEY[0], "127.0.0.1:50124", KEY[2])  # another client's call that started in the same microsecond
    calls.opened(other, lambda: ended_copies.append("another call"))
    twice = (KEY[0], "127.0.0.1:50125", KEY[2])  # two calls of one connection, same method, same microsecond
    calls.opened(twice, lambda: ended_copies.append("the first of two"))
    calls.opened(twice, lambda: ended_copies.append("the second of two"))
    calls.ended(twice)
    await asyncio.sleep(ended.GRACE * 2)  # what an end would have waited, twice over
    assert ended_copies == []
    monkeypatch.setattr(ended, "MOST_KEPT", 3)
    for n in range(10):
        calls.ended((KEY[0], f"127.0.0.1:{n}", KEY[2]))
    assert len(calls._early) == 3  # the latest 3, the copy of each still to come


def test_a_record_names_its_call_as_the_copy_does() -> None:
    entry = pb.HTTPAccessLogEntry()
    entry.common_properties.start_time.seconds = 1733600000
    entry.common_properties.start_time.nanos = 123456789
    entry.common_properties.downstream_remote_address.socket_address.address = "::1"
    entry.common_properties.downstream_remote_address.socket_address.port_value = 50123
    entry.request.path = "/tally.v1.Tally/Append"
    assert key_of(entry) == ("1733600000.123456", "[::1]:50123", "/tally.v1.Tally/Append")
