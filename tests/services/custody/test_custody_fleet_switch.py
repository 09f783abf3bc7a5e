"""The custody ledger behind two `shim serve` processes sharing one PostgreSQL store: a switch through one
is applied by both as one step, and each one's view says so."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from grpc import aio

from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from shim.admin import following_the_default
from shim.store import ModeChange, Store
from tests.helpers import postgres_schema_url, shim_command
from tests.processes import shim_process
from tests.services.custody import Client, serve
from tests.services.custody.messages import REGISTRY
from tests.services.custody.test_custody_shim import _config
from tests.shim.test_evidence import Records
from tests.shim.test_modes import AUTH, TOKEN


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)


async def _open(address: str, ref: str) -> str:
    """Open an account through the shim at `address`: the id the answering side gave it."""
    async with aio.insecure_channel(address) as channel:
        answer = await Client(channel, timeout=10).call("OpenAccount", client_ref=ref, owner=f"Owner {ref}")
    assert answer.code == "OK", answer
    return str(answer.message.account_id)


async def test_a_switch_through_one_custody_replica_applies_on_the_other_before_it_returns(
    tmp_path: Path,
) -> None:
    """Promoted through the first replica, the second answers from BK as soon as the switch returns (it held
    its calls until the commit; the store is re-read only every second), rolled back likewise; both views
    then show the mode and agree with the store."""
    config = _config(tmp_path)
    with config.open("a", encoding="utf-8") as file:
        file.write('\n[admin]\nlisten = "127.0.0.1:0"\n')
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        with postgres_schema_url() as url:
            args = [
                "--config", config, "--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address,
                "--store", url, "--dataplane", "python", "--diff-log", "/dev/null",
            ]  # fmt: skip
            async with shim_process(*args) as first, shim_process(*args) as second:
                ids = [await _open(second.ready["listen"], "before")]
                async with aio.insecure_channel(first.ready["admin"]) as channel:
                    admin = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
                    for mode, ref in (("bk-primary", "promoted"), ("shadow", "rolled-back")):
                        request = apb.SetModeRequest(mode=mode, reason="test", who="ops", force=True)
                        await admin.SetMode(request, metadata=AUTH, timeout=30)
                        ids.append(await _open(second.ready["listen"], ref))
                    # each replica publishes its view once the decision reaches it (after the switch
                    # returned through the first): wait for the views, not for a fixed time
                    deadline = time.monotonic() + 10
                    while True:
                        modes = await admin.GetModes(apb.GetModesRequest(), metadata=AUTH, timeout=30)
                        if all(v.default_mode == "shadow" for v in modes.replicas):
                            break
                        assert time.monotonic() < deadline, f"the replicas' views: {modes.replicas}"
                        await asyncio.sleep(0.05)
    finally:
        await bank.stop()
        await bk.stop()
    assert [i.startswith("A") for i in ids] == [True, False, True]  # Bank's ids are A1, A2...; BK's acc_...
    views = {(v.replica, v.default_mode, v.differs, v.silent) for v in modes.replicas}
    assert views == {(first.replica, "shadow", False, False), (second.replica, "shadow", False, False)}


def test_a_default_promotion_moves_every_method_without_a_mode_of_its_own() -> None:
    """Custody's methods follow the default unless they have a mode of their own: those are what a
    promotion of the default mode moves, and what the gate must find covered; `[gate] methods` add to
    them. Without descriptors nothing is known to move."""
    every = [path.lstrip("/") for path in REGISTRY.methods]
    deposit = "custody.v1.Custody/Deposit"
    pinned = {"*": "shadow", "/" + deposit: "shadow"}
    assert following_the_default(REGISTRY, {"*": "shadow"}, ()) == every
    assert following_the_default(REGISTRY, pinned, ()) == [m for m in every if m != deposit]
    assert following_the_default(REGISTRY, pinned, ["/" + deposit, "other.v1.X/Y"]) == [
        *(m for m in every if m != deposit),
        deposit,
        "other.v1.X/Y",
    ]
    assert following_the_default(None, pinned, [deposit]) == []


async def test_the_gate_names_the_methods_a_default_promotion_would_find_uncovered(tmp_path: Path) -> None:
    """`shim gate` judges the methods with calls in the window; with the descriptors it also names those
    without any, which a promotion of the default mode would refuse as not covered."""
    store = tmp_path / "evidence.db"
    balance = "/custody.v1.Custody/GetBalance"
    evidence = Records()
    evidence.add(method=balance, at=time.time() - 60, count=50)
    await evidence.write_to(str(store))
    config = _config(tmp_path)  # without its [gate] methods, which require every method
    config.write_text(
        re.sub(r"\nmethods = \[[^\]]*\]", "", config.read_text(encoding="utf-8")), encoding="utf-8"
    )
    code, out, err = await shim_command("gate", "--config", config, "--store", store, "--min-compared", "1")
    assert code == 0, out + err
    idle = [path.lstrip("/") for path in REGISTRY.methods if path != balance]
    assert (
        f"gate: {len(idle)} methods of the descriptors have no call in the window: {', '.join(idle)}" in out
    )
    assert "promoting the default mode is refused until each is covered or has a mode of its own" in out


async def test_the_gate_does_not_name_a_method_with_a_mode_of_its_own_as_holding_back_a_promotion(
    tmp_path: Path,
) -> None:
    """A method without calls that has a mode of its own is not moved by a promotion of the default mode,
    which does not judge it: `shim gate` does not name it among the methods holding the promotion back."""
    store = tmp_path / "evidence.db"
    balance, deposit = "/custody.v1.Custody/GetBalance", "/custody.v1.Custody/Deposit"
    evidence = Records()
    evidence.add(method=balance, at=time.time() - 60, count=50)
    await evidence.write_to(str(store))
    opened = Store.open(str(store))
    await opened.start()
    try:
        own = ModeChange(time.time() - 30, "ops", deposit, "shadow", "bk-primary", "its own", forced=True)
        await opened.modes.change([own])
    finally:
        await opened.close()
    config = _config(tmp_path)
    config.write_text(
        re.sub(r"\nmethods = \[[^\]]*\]", "", config.read_text(encoding="utf-8")), encoding="utf-8"
    )
    code, out, err = await shim_command("gate", "--config", config, "--store", store, "--min-compared", "1")
    assert code == 0, out + err
    idle = [path.lstrip("/") for path in REGISTRY.methods if path not in (balance, deposit)]
    assert (
        f"gate: {len(idle)} methods of the descriptors have no call in the window: {', '.join(idle)};" in out
    )


async def test_the_gate_command_fails_while_live_replicas_run_in_different_modes(tmp_path: Path) -> None:
    """`shim gate`, the command a pipeline runs before a promotion, reads the store two replicas share while
    one runs in bank mode by its config, forced (its deposits reach Bank alone; unforced, its start is
    refused). The command fails, naming each live replica and its modes; once that replica has stopped, no
    split is reported. Before, it judged the evidence alone."""
    config = _config(tmp_path)
    with config.open("a", encoding="utf-8") as file:
        file.write('\n[admin]\nlisten = "127.0.0.1:0"\n')
    drifted = tmp_path / "bank-mode.toml"
    text = config.read_text(encoding="utf-8")
    drifted.write_text(re.sub(r'(?m)^mode = "[a-z-]+"', 'mode = "bank"', text), encoding="utf-8")
    assert 'mode = "bank"' not in text
    assert 'mode = "bank"' in drifted.read_text(encoding="utf-8")
    store = tmp_path / "shim.db"
    gate = ("gate", "--config", config, "--store", store, "--min-compared", "1")
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        args = [
            "--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--store", store,
            "--dataplane", "python", "--diff-log", "/dev/null",
        ]  # fmt: skip
        async with shim_process("--config", config, *args) as first:
            # a start in other modes than a live replica's is refused, as a switch of it alone would be
            code, out, err = await shim_command("serve", "--config", drifted, *args)
            assert code == 2, out + err
            assert "starting in the config's mode bank" in err, err
            assert "live replicas of the store would run different modes (" in err, err
            assert f"{first.replica} in * shadow" in err, err
            async with shim_process("--config", drifted, "--force", *args) as second:
                code, out, err = await shim_command(*gate)
                assert code == 1, out + err
                split = [line for line in out.splitlines() if line.startswith("gate: fleet: ")]
                assert len(split) == 1, out
                assert f"{first.replica} in * shadow" in split[0], out
                assert f"{second.replica} in * bank" in split[0], out
                assert out.splitlines()[-1].startswith("gate: FAIL"), out
            code, out, err = await shim_command(*gate)
    finally:
        await bank.stop()
        await bk.stop()
    assert "gate: fleet: " not in out, out + err
