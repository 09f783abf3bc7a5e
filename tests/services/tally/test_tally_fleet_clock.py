"""Timestamps across replicas (`ordering.across_replicas`, docs/rules.md#time-and-a-late-mirror): two
`shim serve` replicas on one store, in front of one Bank and one BK (the tally, with clocks). Through
replica A a client appends twice to a key, and BK answers the first append slowly, so A mirrors the second
2.5 s late and BK stamps it that much later than Bank. Once both appends are compared, the client lists
the key through replica B, whose read is not late itself.

The promise checked: B allows for the lateness of A's write (kept with the key's order in the store), so
the time BK stamped late is a tolerated difference and the read matches. Before, each replica knew only
its own writes' lateness, and B called that time a real difference. And B allows for it only for the times
stamped while that write was under way: once it is over (and the tolerance and the margin have passed), a
BK whose clock is 2 s ahead is a difference, through B, in a write and in a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from grpc import aio

from comparators import LATE_MARGIN
from tests.helpers import NEEDS_ENVOY, NEEDS_POSTGRES, POSTGRES_DSN, postgres_schema_url, until
from tests.processes import shim_process
from tests.services.tally.server import APPEND, DESCRIPTOR_SET, LIST, ListRequest, Request, serve

CONFIG = """
mode = "shadow"
descriptor_sets = ["tally.binpb"]

[methods."tally.v1.Tally/Append"]
key = ["key"]

[methods."tally.v1.Tally/List"]
key = ["key"]
read = true

[ordering]
across_replicas = true

[upstreams.bk]
target = "BK_TARGET"
timeout = "5s"  # BK answers the first append 2.5 s late, on purpose

[[rules]]
regex = 'tally\\.v1\\.\\w+\\.(at|first_at|last_at)'
rule = "timestamp"
tolerance = "500ms"
name = "clock"

[envoy]
comparison_nice = 0  # the tickets are taken in the comparison plane: not starved by the tests beside it
"""

Rows = list[tuple[str, str, list[dict[str, Any]]]]


@contextlib.contextmanager
def _store(engine: str, tmp_path: Path) -> Iterator[tuple[str, Callable[[], Rows]]]:
    """The replicas' store, and a reader of its comparisons: (method, verdict, differences), in order."""
    sql = "SELECT method, verdict, differences FROM comparisons ORDER BY at"
    if engine == "sqlite":
        path = tmp_path / "shim.db"

        def from_file() -> Rows:
            with contextlib.closing(sqlite3.connect(path)) as db:
                return [(m, v, json.loads(d)) for m, v, d in db.execute(sql).fetchall()]

        yield f"sqlite://{path}", from_file
        return
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    with postgres_schema_url() as url:

        def from_postgres() -> Rows:
            with psycopg.connect(url, autocommit=True) as conn:
                rows = conn.execute(sql.encode()).fetchall()
            return [(str(m), str(v), json.loads(d)) for m, v, d in rows]

        yield url, from_postgres


@pytest.mark.parametrize(
    ("dataplane", "engine"),
    [
        ("python", "sqlite"),
        pytest.param("envoy", "sqlite", marks=NEEDS_ENVOY),
        pytest.param("envoy", "postgresql", marks=NEEDS_ENVOY),
    ],
)
async def test_a_time_a_late_write_stamped_through_one_replica_matches_when_read_through_another(
    tmp_path: Path, dataplane: str, engine: str
) -> None:
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    bank, bk = (
        await serve(clock=0.0),
        await serve(slow=True, clock=0.0),
    )  # BK answers writes after their delay
    config.write_text(CONFIG.replace("BK_TARGET", bk.address), encoding="utf-8")
    try:
        with _store(engine, tmp_path) as (url, compared):
            flags = ["--config", config, "--dataplane", dataplane, "--listen", "127.0.0.1:0"]
            flags += ["--bank", bank.address, "--store", url, "--diff-log", "/dev/null"]
            async with shim_process(*flags) as a, shim_process(*flags) as b:
                async with aio.insecure_channel(a.ready["listen"]) as channel:
                    append = channel.unary_unary(APPEND)
                    for entry, delay in (("first", 2500), ("second", 0)):
                        request = Request(key="k", entry=entry, delay_ms=delay)
                        await append(request.SerializeToString(), timeout=10)
                await until(lambda: len(compared()) >= 2, "both appends compared", 30)
                async with aio.insecure_channel(b.ready["listen"]) as channel:  # another replica
                    await channel.unary_unary(LIST)(ListRequest(key="k").SerializeToString(), timeout=10)
                await until(lambda: len(compared()) >= 3, "the read compared", 30)
                # once the tolerance and the margin have passed since the late write was over, BK's clock is
                # really 2 s ahead: a time stamped now is allowed no lateness of that write's (2.5 s and more)
                await asyncio.sleep(0.5 + LATE_MARGIN + 0.1)
                bk.set_clock(2.0)
                async with aio.insecure_channel(b.ready["listen"]) as channel:
                    await channel.unary_unary(APPEND)(
                        Request(key="k", entry="third").SerializeToString(), timeout=10
                    )
                    await channel.unary_unary(LIST)(ListRequest(key="k").SerializeToString(), timeout=10)
                await until(
                    lambda: len(compared()) >= 5, "the third append and the read after it compared", 30
                )
                rows = compared()
    finally:
        await bank.stop()
        await bk.stop()
    assert bk.received == {"k": ["first", "second", "third"]}
    stamped = [
        _seconds(d["bk"]) - _seconds(d["bank"]) for _, _, ds in rows[:2] for d in ds if d["path"] == "at"
    ]
    assert max(stamped) > 2.0, rows  # the second append went late: BK stamped it that much later
    method, _, differences = rows[2]
    assert method == LIST
    last_at = [d.get("rule") for d in differences if d["path"] == "last_at"]
    assert last_at == ["clock"], differences  # the late append's time: tolerated through replica B too
    assert [verdict for _, verdict, _ in rows[:3]] == ["match"] * 3, rows
    third, read = rows[3:]
    # (either may be tainted: a write's first ticket through a replica can be taken after its primary's
    # answer went out, which marks the key out of step; its differences are recorded all the same)
    assert (third[0], [(d["path"], d.get("rule", "")) for d in third[2]]) == (APPEND, [("at", "")]), third
    assert third[1] in ("mismatch", "tainted")
    assert read[0] == LIST
    # the late append's time is still tolerated; the third's, stamped by a BK 2 s ahead, is not
    assert {d["path"]: d.get("rule", "") for d in read[2]} == {"first_at": "clock", "last_at": ""}, read


def _seconds(stamp: str) -> float:
    """An RFC 3339 time as the comparisons keep it, to the microsecond."""
    return datetime.fromisoformat(stamp[:26]).replace(tzinfo=UTC).timestamp()
