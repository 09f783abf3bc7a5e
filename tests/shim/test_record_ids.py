"""The ids of stored records (`time_ordered_id`): 32 hex digits, ordered by time, unique across threads
and processes, with no call to the system's random source each time."""

from __future__ import annotations

import multiprocessing
import threading
import time

from shim.evidence.record import time_ordered_id


def _ids_in_a_child(out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put([time_ordered_id() for _ in range(1000)])


def test_ids_are_unique_across_threads_and_forked_processes() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(time_ordered_id() for _ in range(25_000))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mine = [i for into in made for i in into]
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    children = [context.Process(target=_ids_in_a_child, args=(out,)) for _ in range(2)]
    for child in children:
        child.start()
    theirs = [i for _ in children for i in out.get(timeout=60)]
    for child in children:
        child.join()
    every = [*mine, *theirs]
    assert len(set(every)) == len(every) == 102_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in every)
    prefixes = {i[12:24] for i in every}
    assert len(prefixes) == 3, "one random part per process, drawn again in a forked child"


def test_an_id_made_later_sorts_after() -> None:
    first = time_ordered_id()
    began = int(time.time() * 1000)
    while int(time.time() * 1000) == began:  # the next millisecond
        time.sleep(0.0005)
    assert time_ordered_id() > first
