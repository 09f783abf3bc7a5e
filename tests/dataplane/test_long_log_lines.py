"""`shim serve` on Envoy: a log line too long for a pipe reader's buffer (64 KiB) is cut, and the log goes on.

The supervisor passes on the comparison plane's log lines, and Envoy's: a line over asyncio's default limit
used to end the reader, after which the child blocked on its full stderr pipe for good (the plane, as it
logged a client's method name of 70,000 characters, say). The real command runs here, with a plane or an
Envoy made to say one such line.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shim.dataplane import envoy
from tests.backends import scripted_server
from tests.helpers import until
from tests.processes import shim_process
from tests.shim.test_tls import echo

pytestmark = pytest.mark.skipif(envoy.binary() is None, reason="no Envoy on this platform")
LONG = 100_000  # characters: beyond a StreamReader's default limit (64 KiB)
UNKEYED = (  # the plane's warning for a write it could not mirror, naming its method
    "write out of step without a key: no key marked; what it changed counts as real until the"
    " books are reconciled"
)


async def test_a_plane_log_line_over_64_kib_is_cut_and_the_plane_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison plane says one line of 100,000 characters as it starts: the supervisor passes on its
    start as a warning, and goes on reading (the plane's ready line comes after it)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if 'SHIM_COMPARISON_PLANE' in os.environ:\n"
        f"    sys.stderr.write('B' * {LONG} + '\\n')\n"
        "    sys.stderr.flush()\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    bank = await scripted_server(echo)
    try:
        async with shim_process(
            *("--listen", "127.0.0.1:0", "--bank", bank.address, "--dataplane", "envoy"), cwd=tmp_path
        ) as serving:
            [cut] = [e for e in serving.events() if e.get("event") == "the comparison plane said"]
            assert cut["text"].startswith("BBBB")
            assert len(cut["text"]) < 10_000
            assert cut["cut_from"] == LONG
    finally:
        await bank.stop()


async def test_an_envoy_log_line_over_64_kib_is_cut_and_envoy_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Envoy says one line of 100,000 characters (a stand-in, `SHIM_ENVOY`, says it, then runs Envoy): the
    shim passes on its start, and serves."""
    stand_in = tmp_path / "envoy"
    stand_in.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" --mode validate "*) exec "{envoy.binary()}" "$@";; esac\n'
        f"printf 'warning|stand-in|%0{LONG}d\\n' 0 >&2\n"
        f'exec "{envoy.binary()}" "$@"\n',
        encoding="utf-8",
    )
    stand_in.chmod(0o755)
    monkeypatch.setenv("SHIM_ENVOY", str(stand_in))
    bank = await scripted_server(echo)
    try:
        async with shim_process(
            *("--listen", "127.0.0.1:0", "--bank", bank.address, "--dataplane", "envoy"), cwd=tmp_path
        ) as serving:
            async with aio.insecure_channel(serving.ready["listen"]) as channel:
                assert await channel.unary_unary("/x.Y/Z")(b"hi", timeout=10) == b"re:hi"

            def relayed() -> list[dict[str, object]]:
                return [e for e in serving.events() if e.get("envoy_logger") == "stand-in"]

            await until(lambda: bool(relayed()), "Envoy's long line relayed")  # read as Envoy goes on
            [cut] = relayed()
            assert cut["event"].startswith("0000")
            assert len(cut["event"]) < 10_000
            assert cut["cut_from"] == len("warning|stand-in|") + LONG
    finally:
        await bank.stop()


async def test_a_method_name_of_70000_characters_is_logged_cut_and_the_plane_serves_on(
    tmp_path: Path,
) -> None:
    """A client calls a method whose name is 70,000 characters long, in `shadow` mode: the plane's warning
    names the method cut to a few hundred characters, and the plane goes on serving and logging."""
    # the plane at the suite's priority: niced below the tests beside it, it fell behind by more than the
    # wait for its 201st warning
    config = tmp_path / "shim.toml"
    config.write_text("[envoy]\ncomparison_nice = 0\n", encoding="utf-8")
    bank = await scripted_server(echo)
    try:
        async with (
            shim_process(
                *(
                    "--config",
                    config,
                    "--listen",
                    "127.0.0.1:0",
                    "--bank",
                    bank.address,
                    "--bk",
                    "127.0.0.1:1",
                ),
                *("--dataplane", "envoy", "--store", tmp_path / "shim.db", "--descriptor-source", "files"),
                cwd=tmp_path,
            ) as serving,
            aio.insecure_channel(serving.ready["listen"]) as channel,
        ):
            long_name = "/x.Y/" + "A" * 70_000
            assert await channel.unary_unary(long_name)(b"w", timeout=10) == b"re:w"
            said = await serving.until_event(UNKEYED)
            assert said["method"].startswith("/x.Y/AAAA")
            assert len(said["method"]) < 1_000
            for n in range(200):  # the plane logs on, a warning a call, and never blocks
                await channel.unary_unary(f"/x.Y/W{n}" + "m" * 300)(b"w", timeout=10)
            await serving.until_event(UNKEYED, 201)
            health = health_pb2_grpc.HealthStub(channel)  # answered by the plane itself
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError as exc:
        raise AssertionError(f"a call failed: {exc.code().name} {exc.details()}") from None
    finally:
        await bank.stop()
