"""deploy/systemd/shim.service: systemd itself finds nothing wrong with it (`systemd-analyze verify`,
where it is installed), its ExecStart is a command the shim's CLI parses, and its stop leaves the shim
the time and the signal its drain needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shim.admin_settings import AdminSettings
from shim.cli import parser
from shim.pipeline import RedactSettings
from shim.serving_settings import ServingSettings
from shim.units import parse_duration
from tests.deploy._files import SYSTEMD, stop_bound, unit

UNIT = SYSTEMD / "shim.service"
INSTALLED_SHIM = "/opt/shim/.venv/bin/shim"  # where the unit's install steps put the console script


def settings() -> dict[str, str]:
    """The unit's [Service] settings (each key once)."""
    found = [(key, value) for section, key, value in unit(UNIT) if section == "Service"]
    keys = [key for key, _ in found]
    assert len(keys) == len(set(keys)), "a key given twice"
    return dict(found)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_finds_nothing_wrong_with_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` has no complaint (an unknown key or a bad value is only a warning to it:
    any output fails), with ExecStart pointing at this machine's shim."""
    here = Path(sys.executable).parent / "shim"
    assert here.exists()
    text = UNIT.read_text(encoding="utf-8")
    assert INSTALLED_SHIM in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_SHIM, str(here)), encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_exec_start_parses_with_the_shims_own_parser() -> None:
    """ExecStart runs the installed `shim serve` with flags the CLI takes."""
    program, *argv = settings()["ExecStart"].split()
    assert program == INSTALLED_SHIM
    args = parser().parse_args(argv)
    assert args.command == "serve"
    assert args.config == "/etc/shim/shim.toml"


def test_the_stop_is_a_drain() -> None:
    """SIGTERM goes to `shim serve` alone (it passes it on once; a second signal would end the comparison
    plane at once), and systemd waits longer than the longest stop of the default grace_period, and of
    twice it."""
    service = settings()
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    default = ServingSettings().grace_period
    assert parse_duration("TimeoutStopSec", service["TimeoutStopSec"]) > stop_bound(2 * default)
    assert service["Restart"] == "on-failure"


def test_the_hardening_leaves_envoy_what_it_uses() -> None:
    """The sandbox lets Envoy and the plane do what they do (measured under strace: sockets of these
    families, a parent-death signal, a lower CPU priority, files under $TMPDIR and /dev/shm), and the
    options that would forbid some of it unseen are not set."""
    service = settings()
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert service["PrivateTmp"] == "yes"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "shim"
    assert "MemoryDenyWriteExecute" not in service
    assert "SystemCallFilter" not in service
    assert service["User"] != "root"


def test_the_environment_file_example_names_the_variables_the_shim_reads() -> None:
    """The EnvironmentFile example sets the admin token's and the redaction key's variables (the shim's
    defaults) and the store's password."""
    example = SYSTEMD / "shim.env.example"
    names = {
        line.partition("=")[0]
        for line in example.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert names == {AdminSettings().token_env, RedactSettings().key_env, "PGPASSWORD"}
    assert settings()["EnvironmentFile"].lstrip("-") == "/etc/shim/shim.env"
