"""The gate on the tally (a second service), through a real shim: when both sides refuse every call alike
(the clients' credentials broken: UNAUTHENTICATED), every comparison is a match, and yet nothing shows BK
does the method's work. Neither `shim gate` nor a promotion to `bk-primary` passes on it, and both say
which refusals the evidence is made of. Once the sides answer, the same gate passes and the promotion
applies: the criterion asks for answered calls, not for no refusal."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from shim.admin import Refused, set_mode
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.helpers import shim_command
from tests.services.tally.server import APPEND, REGISTRY, Reply, Request, serve

METHOD = "tally.v1.Tally/Append"
CALLS = 30
MIN_COMPARED = 20  # [gate] min_compared; min_answered keeps its default, 10
REFUSED = (
    "not proven: 0 of 30 clean comparisons answered by Bank; the rest were refusals alike on both sides"
    " (UNAUTHENTICATED 30)"
)


async def test_refusals_alike_on_both_sides_prove_nothing_until_the_sides_answer(tmp_path: Path) -> None:
    store = tmp_path / "shim.db"
    bank, bk = await serve(), await serve()
    for side in (bank, bk):
        side.refuse(grpc.StatusCode.UNAUTHENTICATED)
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=REGISTRY,
                store={"url": str(store)},
                methods={METHOD: MethodSettings(key=("key",))},
                gate={"min_compared": MIN_COMPARED},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            append = channel.unary_unary(APPEND)

            async def calls(prefix: str) -> list[grpc.StatusCode]:
                codes = []
                for n in range(CALLS):
                    request = Request(key=f"{prefix}{n}", entry="e").SerializeToString()
                    try:
                        Reply.FromString(await append(request, timeout=5))
                        codes.append(grpc.StatusCode.OK)
                    except aio.AioRpcError as exc:
                        codes.append(exc.code())
                await shim.drain()
                assert shim.store is not None
                await shim.store.flush()
                return codes

            refused = await calls("r")
            with pytest.raises(Refused) as promotion:
                await set_mode(shim, "bk-primary", [METHOD], "parity proven?", "ops")
            gate_refused = await shim_command("gate", "--store", store, "--min-compared", str(MIN_COMPARED))
            verdicts = sorted({c.verdict.value for c in sink.comparisons})
            for side in (bank, bk):
                side.refuse(None)
            answered = await calls("a")
            gate_answered = await shim_command("gate", "--store", store, "--min-compared", str(MIN_COMPARED))
            await set_mode(shim, "bk-primary", [METHOD], "parity proven", "ops")
            mode = shim.modes.of("/" + METHOD)
    finally:
        await bank.stop()
        await bk.stop()
    assert refused == [grpc.StatusCode.UNAUTHENTICATED] * CALLS, "the clients got Bank's refusal"
    assert verdicts == ["match"], "the same refusal on both sides is a match"
    assert promotion.value.message == (
        f"the gate fails, so BK may not become primary: {METHOD} answered: {REFUSED} (needs ≥ 10)"
        " (--force overrides)"
    )
    code, out, err = gate_refused
    assert code == 1, out + err
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("FAIL")] == [
        ["FAIL", "tally.v1.Tally/Append", "answered"]
    ], out
    assert REFUSED in out
    assert answered == [grpc.StatusCode.OK] * CALLS
    code, out, err = gate_answered
    assert code == 0, out + err
    assert "30 of 60 clean comparisons" in out
    assert mode == "bk-primary"
