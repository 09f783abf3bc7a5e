"""What ordering writes across replicas (`ordering.across_replicas`) adds per mirrored write, on a
PostgreSQL store or a SQLite file (the workers of one machine): the ticket's round trip, the round
trip marking it done, and the hand-over from one replica's write to the next write on its key through
another replica (done, announced on PostgreSQL, then seen by the waiter's poll). Also the replica's
heartbeat (`shim.liveness`), one transaction every `store.refresh`, and the size of `shim_key_order`,
one row per key ever written. Medians and 90th percentiles, in a fresh schema dropped afterwards (a
SQLite file in a temporary directory).

    python tools/key_order_cost.py postgresql://postgres@127.0.0.1:5432/test [--writes 500]
    python tools/key_order_cost.py sqlite [--writes 500]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shim.liveness import Liveness
from shim.store import Store
from shim.store.key_order import KeyOrder


def _figures(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[int(len(ms) * 0.9)]
    print(f"{name:<48} p50 {statistics.median(ms):6.3f} ms   p90 {p90:6.3f} ms   ({len(ms)} writes)")


async def measure(url: str, writes: int) -> None:
    store = Store.open(url)
    await store.start()
    beating = [Liveness(store, "a", 1.0), Liveness(store, "b", 1.0)]  # the replicas' heartbeats
    for liveness in beating:
        await liveness.start()
    a, b = KeyOrder(url, "a", 10.0), KeyOrder(url, "b", 10.0)
    await a.start()
    await b.start()
    try:
        ticket, marked, handover = [], [], []
        for n in range(writes):
            key = f"k{n % 50}"
            started = time.perf_counter()
            mine = a.take([key], "/M")
            await mine.taken.wait()
            ticket.append(time.perf_counter() - started)
            mine.release()
            started = time.perf_counter()
            await a.flush()  # before a's own task gets to it
            marked.append(time.perf_counter() - started)
        for n in range(writes // 5):
            key = f"h{n}"
            first = a.take([key], "/M")
            await first.taken.wait()
            second = b.take([key], "/M")
            await second.taken.wait()
            waiting = asyncio.ensure_future(b.wait(second.held[0]))
            await asyncio.sleep(0.005)  # b is polling by now
            started = time.perf_counter()
            first.release()
            await waiting
            handover.append(time.perf_counter() - started)
            second.release()
        _figures("ticket (one round trip, on the write's path)", ticket)
        _figures("done (one round trip, after BK answered)", marked)
        _figures("hand-over to the next replica (done, then seen)", handover)
        beats = []
        for _ in range(writes):
            started = time.perf_counter()
            await store.liveness.beat("a")
            beats.append(time.perf_counter() - started)
        _figures("a heartbeat (one transaction, every refresh)", beats)
        keys = [f"account-{n:08d}" for n in range(10_000)]
        for start in range(0, len(keys), 1000):
            tickets = a.take(keys[start : start + 1000], "/M")
            await tickets.taken.wait()
            tickets.release()
        await a.flush()
        size_of = "pg_total_relation_size('shim_key_order')"
        if not url.startswith("postgresql"):  # the table and its primary key's index
            size_of = "(SELECT sum(pgsize) FROM dbstat WHERE name LIKE '%shim_key_order%')"
        [(rows, size)] = await store.select(f"SELECT count(*), {size_of} FROM shim_key_order")
        print(
            f"shim_key_order: {size / rows:.0f} bytes per key ({rows} keys of 16 characters, with its index)"
        )
    finally:
        await a.close()
        await b.close()
        for liveness in beating:
            await liveness.stop()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dsn",
        help="a PostgreSQL database where a schema may be made and dropped, or sqlite: a temporary file",
    )
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    if args.dsn == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            asyncio.run(measure(f"sqlite://{Path(directory) / 'shim.db'}", args.writes))
        return
    schema = f"key_order_cost_{secrets.token_hex(4)}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    separator = "&" if "?" in args.dsn else "?"
    url = f"{args.dsn}{separator}options={quote(f'-c search_path={schema}', safe='')}"
    try:
        asyncio.run(measure(url, args.writes))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


if __name__ == "__main__":
    main()
