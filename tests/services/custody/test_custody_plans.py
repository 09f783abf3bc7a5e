"""Custody's plans as the ready line tells them: which writes are placed by keys, and which the lanes
serialize for want of one."""

from __future__ import annotations

import shutil
from pathlib import Path

from shim.app import Shim
from shim.config import Upstream, build, load_file
from tests.services.custody import DESCRIPTOR_SET, REGISTRY

HERE = Path(__file__).parent
CUSTODY = "/custody.v1.Custody/"


def test_a_write_that_mints_its_key_has_none_and_is_serialized(tmp_path: Path) -> None:
    """OpenAccount mints the account id, its key, in its answer: its request names no key, so its calls
    wait for every earlier call, and the ready line says so. Reverse names a movement, whose owners are
    its accounts: it is placed by them."""
    config = tmp_path / "shim.toml"
    shutil.copyfile(HERE / "shim.toml", config)
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    bank = Upstream("bank", "127.0.0.1:1")
    settings = {**load_file(config), "bank": bank, "listen": "127.0.0.1:0", "mode": "bank"}
    plans = Shim(build(settings), registry=REGISTRY).parts.plans
    assert not plans.of(CUSTODY + "OpenAccount").keyed
    assert plans.of(CUSTODY + "OpenAccount").needs_request, "decoded, for the ids its request names"
    assert plans.of(CUSTODY + "Reverse").keyed
    assert plans.of(CUSTODY + "Deposit").keyed
    assert not plans.of(CUSTODY + "ListAccounts").keyed, "a page token has no owner"
    keyed = sorted(p.method.rpartition("/")[2] for p in plans if p.keyed)
    assert plans.keyed() == len(keyed)
    assert keyed == [
        "Deposit",
        "Freeze",
        "GetAccountByRef",
        "GetBalance",
        "ListMovements",
        "Reverse",
        "Transfer",
    ]
    assert plans.serialized() == (
        "the calls of 1 write method with no key (OpenAccount): each waits for every earlier call"
    )
