"""The count of the calls whose copies never reached the shim: read from Envoy in an order that never
counts a copy the processor has, and recorded over several seconds without losing any."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from shim._proto.shim.v1 import ext_proc_pb2 as pb
from shim.dataplane.processor import SERVICE, Processor
from shim.dataplane.unseen import PER_TICK, STREAMS, Unseen, copy_streams
from shim.exporter import Latencies
from shim.metrics import Counters
from shim.plan import Plans


async def test_the_streams_are_read_in_an_order_that_never_counts_one_given_up_twice() -> None:
    """Each figure is read on its own, started first and those the processor ended last: a stream that
    moves on between two reads is found in both (counted given up later), never in neither."""
    figures = {STREAMS[0]: 100, STREAMS[1]: 3, STREAMS[2]: 10, STREAMS[3]: 80}
    asked: list[str] = []

    async def stats(pattern: str) -> dict[str, int]:
        asked.append(pattern)
        name = next(n for n in STREAMS if pattern == f"^{n.replace('.', chr(92) + '.')}$")
        if name == STREAMS[2]:  # between the reads, five open streams end, answered by the processor
            figures[STREAMS[3]] += 5
            figures[STREAMS[2]] -= 5
        return {name: figures[name]}

    assert await copy_streams(stats) == (100, 100 - 3 - 5 - 85, 85)
    assert [a.strip("^$").replace("\\", "") for a in asked] == list(STREAMS)


async def test_a_long_gap_is_recorded_over_several_ticks_and_none_is_lost(tmp_path: Path) -> None:
    counted = tmp_path / "copies.json"
    unseen = Unseen(counted)
    assert unseen.update(given_up=PER_TICK * 2 + 7, taken=0) == PER_TICK * 2 + 7
    assert unseen.take() == PER_TICK
    # a comparison plane started again behind the same Envoy goes on with what is left to record
    again = Unseen(counted)
    assert (again.unsent, again.unrecorded) == (PER_TICK * 2 + 7, PER_TICK + 7)
    assert again.update(given_up=PER_TICK * 2 + 7, taken=0) == 0  # counted once
    assert again.take() == PER_TICK
    assert again.take(None) == 7
    assert again.take(None) == 0
    assert Unseen(counted).unrecorded == 0


async def test_a_copy_answered_as_envoy_gave_up_on_it_is_not_counted_unseen() -> None:
    """The processor answers a copy's stream just as Envoy gives up on it (its `deferred_close_timeout`):
    Envoy counts that stream given up, not answered, though the processor had all of the copy (and
    recorded it under its method). Its answers beyond Envoy's count make up for that, so the call is not
    recorded a second time, as one the shim never saw; a stream that never reached it still is."""
    processor = Processor({}, Plans(None), Counters(), Latencies())
    server = aio.server()
    server.add_generic_rpc_handlers([processor.handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:  # as Envoy: one whole copy
            process = channel.stream_stream(
                f"/{SERVICE}/Process",
                request_serializer=pb.ProcessingRequest.SerializeToString,
                response_deserializer=pb.ProcessingResponse.FromString,
            )
            parts = [pb.ProcessingRequest(request_headers=pb.HttpHeaders(end_of_stream=True))]
            assert [answer async for answer in process(iter(parts), timeout=10)] == []
    finally:
        await server.stop(None)
    assert processor.answered == 1
    unseen = Unseen()
    taken = processor.received_given_up(answered=0) - processor.lost_unnamed  # Envoy: given up, not answered
    assert unseen.update(given_up=1, taken=taken) == 0
    # a second stream Envoy gave up on, which never reached the processor: that call the shim did not see
    assert (
        unseen.update(given_up=2, taken=processor.received_given_up(answered=0) - processor.lost_unnamed) == 1
    )
    # once Envoy counts the answer, the processor's answers make up for nothing more
    assert processor.received_given_up(answered=1) == 0


async def test_an_envoy_started_again_is_counted_from_its_start(tmp_path: Path) -> None:
    """What was counted stays; the new Envoy's counts (from 0) add to it, set only against what the
    processor takes of its copies; a plane started again goes on from there, and one started behind yet
    another Envoy (started while no plane ran) sets aside what the planes before took of the old one's."""
    counted = tmp_path / "copies.json"
    unseen = Unseen(counted)
    unseen.seen_envoy("one", again=False)
    assert unseen.update(given_up=50, taken=40) == 10  # 40 of the 50 were the processor's
    unseen.new_envoy(taken=40, envoy="two")  # its first copy came in: the processor had taken 40 by then
    assert unseen.update(given_up=5, taken=40) == 5  # the new one's 5: none taken since
    assert unseen.update(given_up=9, taken=43) == 1  # 4 more given up, 3 of them taken
    again = Unseen(counted)  # a plane started again behind "two": its own takes count from 0
    assert (again.envoy, again.unsent) == ("two", 16)
    assert again.update(given_up=9, taken=0) == 0
    assert again.update(given_up=12, taken=1) == 2
    later = Unseen(counted)
    later.seen_envoy("three", again=True)  # started while no plane ran, from 0
    assert later.update(given_up=4, taken=0) == 4
    assert Unseen(counted).unsent == 22
