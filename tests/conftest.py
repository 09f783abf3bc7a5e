"""The suite runs on three pytest-xdist workers (pyproject's addopts; the tests mostly wait on servers and
subprocesses, so three keep two cores busier than two do). The tests that load the machine (many
processes, Envoy, sustained traffic) share one scope (`LoadedApart`), so that they run one at a time on one
worker while the others run the rest: two of them at once on two cores would test the machine, not the
shim. (On this machine, with that scope kept: 9 min 12 s on three workers, 12 min 13 s on two.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

# as `shim` itself does (shim/cli): gRPC's own log lines (a peer's GOAWAY as a server stops) are not the
# shim's, and only cluttered the suite's output; a value set by whoever runs the suite wins
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

ROOT = Path(__file__).resolve().parent.parent

LOADED = (  # the files whose tests load the machine (tests/..., as pytest names them)
    "tests/test_benches.py",
    "tests/test_tutorial.py",
    "tests/test_record_replay.py",
    "tests/dataplane/test_envoy_transparency.py",
    "tests/shim/test_hostile_soak.py",
    "tests/shim/test_fleet_switch.py",
    "tests/shim/test_modes.py",
    "tests/shim/test_fleet_report.py",
    "tests/shim/test_workers.py",
    "tests/services/tally/test_tally_fleet.py",
    "tests/services/tally/test_tally_fleet_reads.py",
    "tests/services/tally/test_tally_fleet_run.py",
    "tests/services/custody/test_custody_fleet.py",
    "tests/services/custody/test_custody_fleet_switch.py",
    "tests/services/venue/test_venue_shim.py",
    # its stops with PostgreSQL blackholed are bounded to grace_period and 1.5 s: beside a bench a stop took
    # 6.5 s by the shim's own log, and 3.6 s beside three busy loops (alone: 2.3 s)
    "tests/shim/test_store_faults.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [name for name in LOADED if not (ROOT / name).is_file()]
    if missing:  # a file renamed would run beside the others again, unnoticed
        raise pytest.UsageError(f"tests/conftest.py: LOADED names files that are not there: {missing}")
    items.sort(key=lambda item: loaded_scope(item.nodeid) != LOADED_SCOPE)  # the longest scope first


class LoadedApart(LoadScopeScheduling):
    """xdist's scheduling by scope, with one scope for the tests of LOADED, sent first (the collection has
    them first) to one worker, and one per file for the rest, in their order. Not xdist's own `loadgroup`
    with `xdist_group` marks: with pytest 9.2 its grouping is lost (it renames each item's `_nodeid`, which
    pytest no longer reads), and the loaded tests ran two at a time. A file is one scope, so that its
    module-scoped fixtures (servers, recordings) are set up on one worker only."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        self.config.option.loadscopereorder = False  # by size, a file of many short tests would go first

    def _split_scope(self, nodeid: str) -> str:
        return loaded_scope(nodeid)


def loaded_scope(nodeid: str) -> str:
    """The scope xdist schedules `nodeid` in: LOADED_SCOPE for a test of LOADED, else its file."""
    file = nodeid.split("::", 1)[0]
    return LOADED_SCOPE if file in LOADED else file


LOADED_SCOPE = "loaded"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadScopeScheduling | None:
    """`--dist loadgroup` (pyproject's addopts) is LoadedApart; another `--dist` is xdist's own."""
    return LoadedApart(config, log) if config.getvalue("dist") == "loadgroup" else None
