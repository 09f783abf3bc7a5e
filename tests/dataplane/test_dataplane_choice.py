"""Which data plane runs, and the clear errors of the Envoy one."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from sample_ledger.server import RunningLedger
from shim import dataplane
from shim.config import build
from shim.dataplane import envoy as envoy_process
from shim.errors import ConfigError, StartupError
from shim.testing import running_shim


def test_without_envoy_auto_falls_back_to_python_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIM_ENVOY", raising=False)
    monkeypatch.setattr(envoy_process, "binary", lambda: None)
    plane, why = dataplane.choose("auto")
    assert plane == "python"
    assert "no Envoy binary" in why
    with pytest.raises(StartupError, match="--dataplane envoy: no Envoy binary"):
        dataplane.choose("envoy")
    assert dataplane.choose("python") == ("python", "")


def test_shim_envoy_must_be_an_executable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIM_ENVOY", str(tmp_path / "missing"))
    with pytest.raises(StartupError, match=r"\$SHIM_ENVOY: .*missing is not an executable file"):
        dataplane.choose("auto")


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"dataplane": "nginx"}, "dataplane: 'nginx' is not one of auto, envoy, python"),
        ({"envoy": {"comparison_nice": 25}}, "envoy.comparison_nice: 25 is not a whole number from 0 to 19"),
        ({"envoy": {"concurrency": 0}}, "envoy.concurrency"),
        ({"envoy": {"threads": 2}}, "envoy.threads"),
    ],
)
def test_bad_data_plane_settings_are_refused(settings: dict[str, object], says: str) -> None:
    from shim.config import parse

    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        build(parse({"upstreams": {"bank": {"target": "127.0.0.1:1"}}, **settings}))


async def test_a_configuration_envoy_refuses_is_one_clear_error(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Envoy that refuses the bootstrap (here a stand-in executable that does, as a different Envoy
    version might): the shim does not start, names Envoy's reason, and leaves nothing running."""
    refusing = tmp_path / "envoy"
    refusing.write_text(
        "#!/bin/sh\necho 'error initializing configuration: unknown field \"x\"' >&2\nexit 1\n"
    )
    refusing.chmod(refusing.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SHIM_ENVOY", str(refusing))
    bank, bk = ledgers
    with pytest.raises(StartupError, match=r'Envoy refused the configuration .*unknown field "x"'):
        async with running_shim(bank.address, bk.address, dataplane="envoy"):
            pass


async def test_a_bootstrap_that_cannot_be_read_is_a_clear_start_error(tmp_path: Path) -> None:
    """Envoy's bootstrap is made ready before each start (its port kept, its copies named): one that is not
    there, or not Envoy's JSON, stops the start with an error naming it, and starts nothing."""
    garbled = tmp_path / "envoy.json"
    garbled.write_text("{not json")
    for bootstrap in (tmp_path / "missing.json", garbled):
        with pytest.raises(
            StartupError, match=rf"its bootstrap {re.escape(str(bootstrap))} could not be read"
        ):
            await envoy_process.Envoy("/bin/false", bootstrap).start(within=1.0)
