"""The ports a supervised comparison plane picked for itself at port 0 are kept for the plane started after
it; one taken meanwhile by another process is not, and the plane says so."""

from __future__ import annotations

import socket
from pathlib import Path

from structlog.testing import capture_logs

from shim.config import Upstream, build, merged
from shim.dataplane import kept_ports


def _config() -> object:
    given = {"bank": Upstream("bank", "127.0.0.1:1"), "metrics_listen": "127.0.0.1:0"}
    return build(merged({"admin": {"listen": "127.0.0.1:0"}}, given))


def test_a_kept_port_is_served_on_again_and_a_taken_one_is_said_to_have_moved(tmp_path: Path) -> None:
    """The metrics port is free again: kept. The admin API's is held by another socket (listening or not):
    the plane picks a new one, and a warning names the address it served on, so that whoever scrapes or
    administers it learns the address moved. Before, it moved without a word."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        held = taken.getsockname()[1]
        kept_ports.keep(tmp_path, free, held)
        with capture_logs() as logs:
            config = kept_ports.reuse(_config(), tmp_path)  # type: ignore[arg-type]
    assert config.serving.metrics_listen == f"127.0.0.1:{free}"
    assert config.admin.listen == "127.0.0.1:0"
    (said,) = [e for e in logs if "port the plane before served on is taken" in e["event"]]
    assert said["log_level"] == "warning"
    assert said["event"].startswith("the admin API port")
    assert said["was"] == f"127.0.0.1:{held}"
