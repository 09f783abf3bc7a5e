"""An id field that is also redacted: the store keeps its kind's ids sealed, never as they were, and the
translation works as without redaction, in this shim, after a restart and in another replica; log lines
and `shim ids` show such ids as their hashes (tests/shim/_payments.py: Bank mints "M1", BK "mv_<hex>")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio
from structlog.testing import capture_logs

from comparators.ids import Found, IdFields
from comparators.redact import Redactor
from shim.app import Shim
from shim.errors import ConfigError
from shim.ids import IdBook
from shim.metrics import Counters
from shim.store import Sealer, Unpaired
from shim.testing import CapturingSink, running_shim
from tests.helpers import shim_command
from tests.shim import test_store as engines
from tests.shim._payments import IDS, METHODS, REGISTRY, Client, Served, serve
from tests.shim.test_store import Target

MINTED = "pay.v1.Movement.movement_id"
KEY = "ids-redaction-key"

durable = engines.durable  # SQLite in a file and PostgreSQL


@pytest.fixture
async def sides() -> AsyncIterator[tuple[Served, Served]]:
    bank, bk = await serve("bank"), await serve("bk")
    try:
        yield bank, bk
    finally:
        await bk.stop()
        await bank.stop()


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_REDACT_KEY", KEY)


@contextlib.asynccontextmanager
async def _shim(
    bank: Served, bk: Served, url: str, **settings: Any
) -> AsyncIterator[tuple[Shim, CapturingSink, Client]]:
    settings = {
        "registry": REGISTRY,
        "ids": IDS,
        "methods": METHODS,
        "shadow_timeout": 10.0,
        "redact": {"fields": [MINTED]},
        "store": {"url": url},
        **settings,
    }
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield shim, sink, Client(channel)


def _hash(value: str) -> str:
    return Redactor((MINTED,), REGISTRY, KEY.encode()).hash(value)


async def test_a_redacted_id_field_is_stored_sealed_and_translates_after_a_restart(
    sides: tuple[Served, Served], durable: Target
) -> None:
    """`pay.v1.Movement.movement_id` is redacted. The Move's pair (and its owner) is stored sealed: the
    store holds neither id, nor the owner, as they were. A Reverse by Bank's id reaches BK with BK's id,
    through this shim and through the next one on the same store, which opens the pairs it loads; `shim
    ids list` shows the ids as the comparisons' hashes. Before, the pair was stored, and listed, as it was."""
    bank, bk = sides
    async with _shim(bank, bk, durable.url) as (shim, sink, client):
        await client.move("A", "10.00")
        await client.reverse("M1")
        await sink.wait_for(2)
        assert shim.store is not None
        await shim.store.flush()
    (bk_movement_id,) = bk.payments.movements
    stored = durable.sql("SELECT bank_id, bk_id, owner FROM id_pairs WHERE kind = 'movement'")
    assert len(stored) == 1
    assert all(value.startswith("sealed:") for value in stored[0]), stored
    assert not {"M1", bk_movement_id, "A"} & {v for row in stored for v in row}
    assert [bk_movement_id] == [sent.movement_id for sent in bk.payments.sent("Reverse")]
    async with _shim(bank, bk, durable.url) as (shim, sink, client):
        assert shim.ids is not None
        assert shim.ids.known("bank", "movement", "M1") == bk_movement_id  # preloaded, opened
        await client.reverse("M1", "twice")
        (reverse,) = await sink.wait_for(1)
    assert bk.payments.sent("Reverse")[-1].movement_id == bk_movement_id
    assert reverse.exchange.routing_key == "A"  # the owner, stored sealed with the pair
    code, out, err = await shim_command("ids", "list", "--store", durable.url)
    assert code == 0, err
    assert f"movement\t{_hash('M1')}\t{_hash(bk_movement_id)}\t{_hash('A')}\t" in out
    assert "M1" not in out
    assert bk_movement_id not in out


async def test_pairs_stored_as_they_were_are_sealed_when_the_shim_starts(
    sides: tuple[Served, Served], durable: Target
) -> None:
    """The pairs and unpaired ids a shim that did not redact the field stored as they were are sealed in
    place when a shim that redacts it starts, and translate as before; `shim ids forget` finds them by
    the id as it was."""
    bank, bk = sides
    async with _shim(bank, bk, durable.url, redact={}) as (shim, sink, client):  # the field not redacted
        await client.move("A", "10.00")
        await sink.wait_for(1)
        assert shim.store is not None
        shim.store.pairs.put_unpaired([Unpaired("movement", "bank", "M9", "A", 1.0)])
        await shim.store.flush()
    (bk_movement_id,) = bk.payments.movements
    assert durable.sql("SELECT bank_id, bk_id FROM id_pairs") == [("M1", bk_movement_id)]
    with capture_logs() as logs:
        async with _shim(bank, bk, durable.url) as (_, sink, client):
            await client.reverse("M1")
            await sink.wait_for(1)
    assert [sent.movement_id for sent in bk.payments.sent("Reverse")] == [bk_movement_id]
    (sealing,) = [
        e for e in logs if e["event"] == "id pairs of redacted fields stored as they were are sealed"
    ]
    assert sealing["rows"] == 2
    movements = "FROM id_pairs WHERE kind = 'movement'"  # the reversal's pair is of a kind not redacted
    rows = [
        *durable.sql(f"SELECT bank_id, bk_id, owner {movements}"),
        *durable.sql("SELECT value, owner FROM unpaired_ids"),
    ]
    assert len(rows) == 2
    assert all(value.startswith("sealed:") for row in rows for value in row), rows
    code, out, err = await shim_command(
        "ids", "forget", "--store", durable.url, "--kind", "movement", "M1", "M9"
    )
    assert code == 0, err
    assert "forgot 1 pair and 1 unpaired id of kind movement" in out
    assert durable.sql(f"SELECT COUNT(*) {movements}") == [(0,)]


def test_an_id_conflict_of_a_redacted_field_is_logged_with_hashes() -> None:
    """A pair that conflicts with one learned earlier is logged, as before, but with the ids of a sealed
    kind as their hashes; before, the line quoted them (and the store's rival pairs) as they were."""
    fields = IdFields(IDS, REGISTRY)
    sealer = Sealer(KEY.encode(), ("movement",), _hash)
    book = IdBook(fields, None, Counters(), sealer=sealer)
    at = (0, "movement_id")
    first = (Found("movement", True, at, "M1", "A"), Found("movement", True, at, "mv_1", "A"))
    rival = (Found("movement", True, at, "M1", "A"), Found("movement", True, at, "mv_2", "A"))
    with capture_logs() as logs:
        book.learn([first], {})
        book.learn([rival], {})
    (conflict,) = [e for e in logs if e["event"].startswith("id pair conflicts")]
    assert (conflict["bank_id"], conflict["bk_id"], conflict["known_bk_id"]) == (
        _hash("M1"),
        _hash("mv_2"),
        _hash("mv_1"),
    )


async def test_pairs_sealed_under_another_key_are_left_out_and_said_so(
    sides: tuple[Served, Served], durable: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shim started with another redaction key cannot open the pairs sealed under the first: it loads
    none of them, says so once, and learns the ids anew as unknown ones."""
    bank, bk = sides
    async with _shim(bank, bk, durable.url) as (shim, sink, client):
        await client.move("A", "10.00")
        await sink.wait_for(1)
    monkeypatch.setenv("SHIM_REDACT_KEY", "another-key")
    with capture_logs() as logs:
        async with _shim(bank, bk, durable.url) as (shim, _, _):
            assert shim.ids is not None
            assert shim.ids.known("bank", "movement", "M1") is None
    (said,) = [e for e in logs if e["event"].startswith("id pairs sealed under another redaction key")]
    assert said["pairs"] == 1


def test_a_redacted_id_field_needs_the_key_from_the_environment_for_a_lasting_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a random key (none in the environment) the pairs stored would not open after a restart, nor
    in another worker or replica: refused at start, in one line naming both settings. A store in memory
    lasts no longer than the process: taken."""
    from shim.config import build, parse
    from shim.parts import Parts

    monkeypatch.delenv("SHIM_REDACT_KEY")

    def parts(url: str) -> Parts:
        settings = {
            "upstreams": {"bank": {"target": "127.0.0.1:1"}, "bk": {"target": "127.0.0.1:2"}},
            "ids": {kind.name: {"minted": list(kind.minted)} for kind in IDS},
            "redact": {"fields": [MINTED]},
            "store": {"url": url},
        }
        return Parts(build(parse(settings)), REGISTRY)

    with pytest.raises(ConfigError) as refused:
        parts("shim.db")
    assert str(refused.value) == (
        "ids.movement: pay.v1.Movement.movement_id is redacted (redact.fields), so its ids are stored sealed"
        " under the redaction key, and $SHIM_REDACT_KEY (redact.key_env) is not set: under a random key they"
        " would not open after a restart, nor in another worker or replica"
    )
    assert parts(":memory:").sealer is not None
