"""The ConfigMap's shim.toml is a config the shim serves with: `shim serve --config` on it, its addresses
swapped for this machine's (loopback, port 0, a test service as Bank and BK, the test database as the
store), starts, answers gRPC health SERVING, passes a call to Bank, stores its comparison and stops
cleanly on SIGTERM. On two services: the custody ledger and the order venue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shim.dataplane import envoy
from tests.deploy._files import CONFIG_KEY, shipped_config_text
from tests.helpers import POSTGRES_DSN, postgres_schema_url, until
from tests.pg_relay import relayed
from tests.processes import shim_process
from tests.services import custody, venue
from tests.services.venue.client import VenueClient

STEP = 60.0  # a start (Envoy validated and started), or a stop


def swapped(text: str, addresses: dict[str, str]) -> str:
    """The config with the value of each `key = "..."` line named in `addresses` replaced, in order of
    appearance for a key given twice (`target`: Bank's, then BK's); every line to swap must be there."""
    left = {key: list(values) if isinstance(values, list) else [values] for key, values in addresses.items()}

    def swap(match: re.Match[str]) -> str:
        values = left.get(match.group(2))
        if not values:
            return match.group(0)
        return f"{match.group(1)}{json.dumps(values.pop(0))}"

    out = re.sub(r'^(\s*(\w+)\s*=\s*)"[^"\n]*"', swap, text, flags=re.M)
    assert not any(left.values()), f"not in the shipped config: {left}"
    return out


@contextlib.contextmanager
def store_url(tmp_path: Path) -> Iterator[tuple[str, Callable[[str], int]]]:
    """The fleet's store: the test database when there is one (a schema of its own), else a SQLite file;
    and a count of a table's rows in it."""
    if POSTGRES_DSN:
        with postgres_schema_url() as url:

            def count(table: str) -> int:
                with psycopg.connect(url) as conn:
                    row = conn.execute(f"SELECT COUNT(*) FROM {table}".encode()).fetchone()
                    return int(row[0]) if row else 0

            yield url, count
        return
    path = tmp_path / "shim.db"

    def count_sqlite(table: str) -> int:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    yield str(path), count_sqlite


async def custody_write(channel: aio.Channel) -> None:
    answer = await custody.Client(channel).call("OpenAccount", client_ref="C1", owner="Ada")
    assert answer.ok, answer
    assert answer.message.account_id == "A1"  # Bank's answer (BK mints "acc_...")


async def venue_write(channel: aio.Channel) -> None:
    account = await VenueClient(channel).open_account("ACC-1", "1000.00")
    assert account.account == "ACC-1"


SERVICES: dict[str, tuple[Callable[[str], Awaitable[Any]], Callable[[aio.Channel], Awaitable[None]]]] = {
    "custody": (custody.serve, custody_write),
    "venue": (venue.serve, venue_write),
}


@contextlib.asynccontextmanager
async def sides(name: str) -> AsyncIterator[tuple[str, str]]:
    """Bank and BK of the service, on free loopback ports: their addresses."""
    serve = SERVICES[name][0]
    bank = await serve("bank")
    try:
        bk = await serve("bk")
        try:
            yield bank.address, bk.address
        finally:
            await bk.stop()
    finally:
        await bank.stop()


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_shim_serve_on_the_shipped_config_answers_health_and_serves(
    service: str, tmp_path: Path
) -> None:
    """The shipped shim.toml, addresses swapped, serves: health SERVING, a write answered by Bank and
    compared into the store, the admin API up with the Secret's token, a clean stop on SIGTERM."""
    shipped = shipped_config_text()
    async with sides(service) as (bank, bk):
        with store_url(tmp_path) as (url, count):
            addresses = {
                "listen": "127.0.0.1:0",
                "metrics_listen": "127.0.0.1:0",
                "target": [bank, bk],
                "url": url,
            }
            text = swapped(shipped, addresses) + '\n[admin]\nlisten = "127.0.0.1:0"\n'
            changed = tomllib.loads(text)
            assert changed.pop("admin") == {"listen": "127.0.0.1:0"}
            assert _without_addresses(changed) == _without_addresses(tomllib.loads(shipped))
            config = tmp_path / CONFIG_KEY
            config.write_text(text, encoding="utf-8")
            ready, stderr = await _serve(config, service, count)
    assert ready["store"] is not None
    assert ready["admin"]
    assert ready["metrics"]
    assert ready["dataplane"] == ("envoy" if envoy.binary() else "python")  # Envoy where the image has it
    assert '"event": "stopped"' in stderr


async def _serve(config: Path, service: str, count: Callable[[str], int]) -> tuple[dict[str, Any], str]:
    """`shim serve --config CONFIG` (as the image runs it) until ready; health, one write, SIGTERM."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "shim", "serve", "--config", str(config)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=config.parent,
        env={**os.environ, "SHIM_ADMIN_TOKEN": "t0ken", "SHIM_REDACT_KEY": "k3y"},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), STEP)).decode()
            assert line, "shim serve exited before it was ready:\n" + "".join(lines)
            lines.append(line)
            ready = json.loads(line)
            if ready.get("event") == "ready":
                break
        async with aio.insecure_channel(ready["listen"]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=STEP)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            await SERVICES[service][1](channel)
        proc.send_signal(signal.SIGTERM)
        rest = asyncio.create_task(proc.stderr.read())
        assert await asyncio.wait_for(proc.wait(), STEP) == 0
        lines.append((await rest).decode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert count("comparisons") == 1  # the write was mirrored to BK and compared, and the store has it
    return ready, "".join(lines)


def _without_addresses(config: dict[str, Any]) -> dict[str, Any]:
    """The config with the swapped values left out: what must be the same."""
    config = json.loads(json.dumps(config))
    for key in ("listen", "metrics_listen"):
        config.pop(key)
    for side in config["upstreams"].values():
        side.pop("target")
    config["store"].pop("url")
    return config


async def _health(address: str) -> str:
    """What the kubelet's `grpc` probe gets (timeoutSeconds 3): the overall status, or the call's code."""
    async with aio.insecure_channel(address) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except aio.AioRpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


@pytest.mark.skipif(envoy.binary() is None, reason="no Envoy on this platform")
async def test_the_probes_see_serving_while_a_plane_that_died_in_a_store_outage_waits_for_it(
    tmp_path: Path,
) -> None:
    """The shipped config on Envoy, its PostgreSQL blackholed, then the comparison plane killed (out of
    memory, a crash): the plane started again waits for its store, and the probes (through Envoy, as the
    Deployment's) get SERVING all along, while Envoy carries the clients' calls; SIGTERM then stops it
    all, status 0. Before, each plane started again exited (it could not open its store), the probes got
    UNAVAILABLE for as long as the outage lasted, liveness restarted the pod, and the pod started again
    could not start either."""
    async with sides("custody") as (bank, bk):
        with postgres_schema_url() as url:
            async with relayed(url) as (through, relay):
                addresses = {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "target": [bank, bk]}
                config = tmp_path / CONFIG_KEY
                config.write_text(
                    swapped(shipped_config_text(), {**addresses, "url": through}), encoding="utf-8"
                )
                async with shim_process("--config", config, cwd=tmp_path) as shim:
                    address = shim.ready["listen"]
                    relay.blackhole()
                    os.kill(int(shim.ready["pid"]), signal.SIGKILL)
                    await shim.until_event(
                        "the comparison plane exited; Envoy serves the clients on; the plane is started again"
                    )
                    await until(
                        lambda: _said(shim.stderr, "cannot open store"),
                        "the plane waits",
                        STEP,
                    )
                    seen = []
                    for _ in range(5):  # a probe every second, past a try of the store (its connect timeout)
                        seen.append(await _health(address))
                        await asyncio.sleep(1.0)
                    async with aio.insecure_channel(address) as channel:
                        answer = await custody.Client(channel).call(
                            "OpenAccount", client_ref="C2", owner="Bo"
                        )
                    assert await shim.stop() == 0
    assert seen == ["SERVING"] * 5
    assert answer.ok, answer  # Bank's answer, through Envoy


def _said(lines: list[str], text: str) -> bool:
    return any(text in line for line in lines)
