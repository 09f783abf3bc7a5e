"""SIGHUP after the config names other files for the listener's certificate (`[tls] cert`, `key`): the
new files are served, on both data planes; a change a running listener cannot take (TLS turned off) is
named in the "need a restart" line, and the certificate in use stays. Certificates are made in the tests
(trustme)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from tests.backends import Running, scripted_server
from tests.helpers import PLANES
from tests.shim.test_tls import Pki, _client_credentials, _localhost, _say, echo
from tests.shim.test_tls_files import TIMEOUT, Serving, serve_args


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def bank() -> AsyncIterator[Running]:
    server = await scripted_server(echo)
    yield server
    await server.stop()


def _tls(cert: str, key: str) -> bytes:
    return f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'.encode()


@pytest.mark.parametrize("plane", PLANES)
async def test_sighup_serves_the_certificate_the_config_now_names(
    pki: Pki, bank: Running, plane: str
) -> None:
    """a.crt, then the config names b.crt (of another CA): after SIGHUP new clients get b.crt and the
    config is reloaded with nothing to restart; a config naming a missing file keeps b.crt in use (and
    says why); one with no [tls] names tls.cert and tls.key as needing a restart, b.crt still served."""
    config = pki.file("shim.toml", _tls(*pki.server("a", "localhost")))
    proc = await asyncio.create_subprocess_exec(
        *serve_args(bank, config, plane),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    serving = Serving(proc)
    try:
        address = _localhost(str((await serving.next("ready"))["listen"]))
        assert await _say(address, _client_credentials(pki.server_ca)) == b"re:hi"

        other = trustme.CA()
        pki.file("shim.toml", _tls(*pki.server("b", "localhost", ca=other)))
        proc.send_signal(signal.SIGHUP)
        assert (await serving.next("certificate"))["event"] == "certificates reloaded"
        assert (await serving.next("config"))["event"] == "config reloaded"
        assert await _say(address, _client_credentials(other), b"b") == b"re:b"

        pki.file("shim.toml", _tls(str(pki.folder / "missing.crt"), str(pki.folder / "b.key")))
        proc.send_signal(signal.SIGHUP)
        refused = await serving.next("certificate")
        assert (refused["level"], refused["error"]) == (
            "error",
            f"tls.cert: cannot read {pki.folder / 'missing.crt'}: No such file or directory",
        )
        assert (await serving.next("config"))["event"] == "config reloaded"
        assert await _say(address, _client_credentials(other), b"still") == b"re:still"

        pki.file("shim.toml", b"")
        proc.send_signal(signal.SIGHUP)
        reloaded = await serving.next("config")
        assert (
            reloaded["event"]
            == "config reloaded; these changed settings need a restart and keep their values"
        ), reloaded
        assert reloaded["settings"] == ["tls.cert", "tls.key"]
        assert await _say(address, _client_credentials(other), b"kept") == b"re:kept"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
