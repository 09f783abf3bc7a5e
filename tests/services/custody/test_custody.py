"""The custody ledger's two sides, called directly: every trait the package docstring lists."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from grpc import aio

from tests.services.custody import BUGS, DESCRIPTOR_SET, REGISTRY, Answer, Client, Served, serve
from tests.services.custody.messages import METHODS, path
from tests.services.custody.workload import INTENTS, book_of, rounds_apart, run_workload

ID_FORMATS = {
    "bank": (re.compile(r"A[1-9][0-9]*\Z"), re.compile(r"M[1-9][0-9]*\Z")),
    "bk": (re.compile(r"acc_[0-9a-f]{10}\Z"), re.compile(r"mv_[0-9a-f]{10}\Z")),
}


@contextlib.asynccontextmanager
async def connected(side: str, bugs: Iterable[str] = BUGS) -> AsyncIterator[tuple[Served, Client]]:
    served = await serve(side, bugs=bugs)
    try:
        async with aio.insecure_channel(served.address) as channel:
            yield served, Client(channel)
    finally:
        await served.stop()


@pytest.fixture(params=["bank", "bk"])
async def side(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Served, Client]]:
    """Each side in turn, BK with its bugs on (none of the traits shared by both touches them)."""
    async with connected(request.param) as running:
        yield running


async def _account(client: Client, ref: str, funds: str = "") -> Any:
    account = (await client.call("OpenAccount", client_ref=ref, owner=f"Owner {ref}")).message
    if funds:
        assert (await client.call("Deposit", account_id=account.account_id, amount=funds)).ok
    return account


async def _balance(client: Client, account_id: str) -> str:
    return str((await client.call("GetBalance", account_id=account_id)).message.balance)


def _refusal(answer: Answer) -> tuple[str, str, list[tuple[str, str]]]:
    return answer.code, answer.details, [(v.type, v.description) for v in answer.violations]


def test_the_descriptor_set_describes_the_service_and_marks_the_reads() -> None:
    """DESCRIPTOR_SET holds custody.proto with its imports, and exactly the four reads are NO_SIDE_EFFECTS."""
    files = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET).file]
    assert files == ["google/protobuf/timestamp.proto", "custody.proto"]
    assert set(METHODS) == {
        "OpenAccount",
        "GetAccountByRef",
        "GetBalance",
        "Deposit",
        "Transfer",
        "Reverse",
        "Freeze",
        "ListMovements",
        "ListAccounts",
    }
    reads = {m for m in METHODS if (info := REGISTRY.method(path(m))) is not None and info.read_only}
    assert reads == {"GetAccountByRef", "GetBalance", "ListMovements", "ListAccounts"}
    info = REGISTRY.method(path("ListMovements"))
    assert info is not None
    assert info.server_streaming


async def test_each_side_mints_ids_in_its_own_format(side: tuple[Served, Client]) -> None:
    """Bank mints A1, M1, ...; BK mints acc_ and mv_ with 10 hex digits; client_ref is kept as given."""
    served, client = side
    account_format, movement_format = ID_FORMATS[served.side]
    account = await _account(client, "ref-1")
    moved = (await client.call("Deposit", account_id=account.account_id, amount="5")).message
    assert account_format.match(account.account_id), account.account_id
    assert movement_format.match(moved.movement_id), moved.movement_id
    assert account.client_ref == "ref-1"
    by_ref = (await client.call("GetAccountByRef", client_ref="ref-1")).message
    assert by_ref.account_id == account.account_id


async def test_decimals_and_timestamps_are_each_sides_own() -> None:
    """Bank writes two decimals and stamps nanoseconds; BK drops trailing zeros and stamps microseconds."""
    written: dict[str, list[str]] = {}
    for side_name in ("bank", "bk"):
        async with connected(side_name) as (_, client):
            account = await _account(client, "ref-1")
            before = time.time_ns()
            moved = (await client.call("Deposit", account_id=account.account_id, amount="100.5")).message
            after = time.time_ns()
            assert before - 1000 <= moved.booked_at.ToNanoseconds() <= after
            if side_name == "bk":
                assert moved.booked_at.nanos % 1000 == 0
            balance = await _balance(client, account.account_id)
            other = await _account(client, "ref-2")
            written[side_name] = [account.balance, moved.amount, balance, other.balance]
    assert written == {"bank": ["0.00", "100.50", "100.50", "0.00"], "bk": ["0", "100.5", "100.5", "0"]}


async def test_a_movement_on_a_frozen_account_is_refused_with_the_sides_own_account_id(
    side: tuple[Served, Client],
) -> None:
    """Deposit into, transfer from and to a frozen account: FAILED_PRECONDITION, a FROZEN violation whose
    subject is that side's id of the frozen account, and details without any id."""
    served, client = side
    active = await _account(client, "active", funds="50")
    frozen = await _account(client, "frozen", funds="50")
    assert (await client.call("Freeze", account_id=frozen.account_id)).message.frozen
    before = await book_of(served.address)
    answers = [
        await client.call("Deposit", account_id=frozen.account_id, amount="1"),
        await client.call(
            "Transfer", from_account=frozen.account_id, to_account=active.account_id, amount="1"
        ),
        await client.call(
            "Transfer", from_account=active.account_id, to_account=frozen.account_id, amount="1"
        ),
    ]
    for answer in answers:
        assert _refusal(answer) == (
            "FAILED_PRECONDITION",
            "account is frozen",
            [("FROZEN", "account is frozen")],
        )
        assert [v.subject for v in answer.violations] == [frozen.account_id]
    assert await book_of(served.address) == before


async def test_reversing_twice_is_refused_with_the_sides_own_movement_id(side: tuple[Served, Client]) -> None:
    """A reversal books the opposite movement under a new id; a second one is FAILED_PRECONDITION with an
    ALREADY_REVERSED violation naming that side's movement id."""
    _, client = side
    payer = await _account(client, "payer", funds="100")
    payee = await _account(client, "payee")
    moved = (
        await client.call("Transfer", from_account=payer.account_id, to_account=payee.account_id, amount="30")
    ).message
    reversal = (await client.call("Reverse", movement_id=moved.movement_id)).message
    assert reversal.movement_id not in ("", moved.movement_id)
    assert (reversal.from_account, reversal.to_account) == (payee.account_id, payer.account_id)
    again = await client.call("Reverse", movement_id=moved.movement_id)
    assert _refusal(again) == (
        "FAILED_PRECONDITION",
        "movement already reversed",
        [("ALREADY_REVERSED", "movement already reversed")],
    )
    assert [v.subject for v in again.violations] == [moved.movement_id]
    listed = await client.call("ListMovements", account_id=payee.account_id)
    assert [m.movement_id for m in listed.messages] == [moved.movement_id, reversal.movement_id]


async def test_a_transfer_beyond_the_balance_names_the_paying_account(side: tuple[Served, Client]) -> None:
    """More than the paying account holds: FAILED_PRECONDITION, INSUFFICIENT_FUNDS on that side's id of it."""
    _, client = side
    payer = await _account(client, "payer", funds="10")
    payee = await _account(client, "payee")
    answer = await client.call(
        "Transfer", from_account=payer.account_id, to_account=payee.account_id, amount="10.01"
    )
    assert _refusal(answer) == (
        "FAILED_PRECONDITION",
        "insufficient funds",
        [("INSUFFICIENT_FUNDS", "insufficient funds")],
    )
    assert [v.subject for v in answer.violations] == [payer.account_id]


async def test_refusals_are_worded_alike_on_both_sides_and_name_no_id() -> None:
    """Every refusal has the same code, details and violation type on both sides; no details hold an id."""
    refusals: dict[str, list[tuple[str, str, list[tuple[str, str]]]]] = {}
    for side_name in ("bank", "bk"):
        async with connected(side_name, bugs=set()) as (_, client):
            payer = await _account(client, "payer", funds="10")
            payee = await _account(client, "payee")
            moved = (
                await client.call(
                    "Transfer", from_account=payer.account_id, to_account=payee.account_id, amount="1"
                )
            ).message
            await client.call("Reverse", movement_id=moved.movement_id)
            await client.call("Freeze", account_id=payee.account_id)
            answers = [
                await client.call("OpenAccount", client_ref="", owner="x"),
                await client.call("OpenAccount", client_ref="payer", owner="x"),
                await client.call("GetAccountByRef", client_ref="nobody"),
                await client.call("GetBalance", account_id="A999"),
                await client.call("Deposit", account_id=payer.account_id, amount="1.0001"),
                await client.call("Deposit", account_id=payer.account_id, amount="-1"),
                await client.call("Reverse", movement_id="M999"),
                await client.call("Reverse", movement_id=moved.movement_id),
                await client.call("Deposit", account_id=payee.account_id, amount="1"),
                await client.call(
                    "Transfer", from_account=payer.account_id, to_account=payee.account_id, amount="100"
                ),
                await client.call("ListAccounts", page_size=-1),
            ]
            refusals[side_name] = [_refusal(a) for a in answers]
            for answer in answers:
                assert not re.search(r"\b(A|M)[0-9]+\b|acc_|mv_", answer.details), answer.details
    assert refusals["bank"] == refusals["bk"]
    assert [code for code, _, _ in refusals["bank"]] == [
        "INVALID_ARGUMENT",
        "ALREADY_EXISTS",
        "NOT_FOUND",
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "FAILED_PRECONDITION",
        "FAILED_PRECONDITION",
        "INVALID_ARGUMENT",
    ]


async def test_a_transfer_to_the_same_account_is_refused_by_bank_and_a_no_op_on_bk() -> None:
    """Bank: INVALID_ARGUMENT; BK (planted "same-account"): OK, a Movement with no id and amount "0";
    neither book changes."""
    answers: dict[str, Answer] = {}
    books: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for side_name in ("bank", "bk"):
        async with connected(side_name) as (served, client):
            account = await _account(client, "ref-1", funds="20")
            before = await book_of(served.address)
            answers[side_name] = await client.call(
                "Transfer", from_account=account.account_id, to_account=account.account_id, amount="5"
            )
            books[side_name] = (before, await book_of(served.address))
            if side_name == "bk":
                (moved,) = answers["bk"].messages
                assert (moved.movement_id, moved.from_account, moved.to_account, moved.amount) == (
                    "",
                    account.account_id,
                    account.account_id,
                    "0",
                )
                assert moved.HasField("booked_at")
    assert (answers["bank"].code, answers["bank"].details) == (
        "INVALID_ARGUMENT",
        "cannot transfer to the same account",
    )
    assert answers["bank"].violations == ()
    assert answers["bk"].ok
    assert books["bank"][0] == books["bank"][1] == books["bk"][0] == books["bk"][1]


@pytest.mark.parametrize(
    ("amount", "bank", "bk_buggy", "bk_fixed"),
    [
        ("12.345", "12.35", "12.34", "12.35"),  # 4 is even: half-even rounds down
        ("7.105", "7.11", "7.1", "7.11"),
        ("12.355", "12.36", "12.36", "12.36"),  # 5 is odd: both round up
        ("12.344", "12.34", "12.34", "12.34"),
        ("12.5", "12.50", "12.5", "12.5"),
    ],
)
async def test_fee_rounding_rounds_three_decimal_transfers_half_even_on_bk_only(
    amount: str, bank: str, bk_buggy: str, bk_fixed: str
) -> None:
    """Planted bug "fee-rounding": a Transfer of three decimals ending in 5 after an even digit is booked a
    cent lower by BK; with the bug off BK books what Bank does; deposits always round half-up."""
    assert rounds_apart(amount) == (bank.rstrip("0") != bk_buggy.rstrip("0"))
    booked: dict[tuple[str, bool], tuple[str, str]] = {}
    for side_name, bugs in (("bank", BUGS), ("bk", BUGS), ("bk", set())):
        async with connected(side_name, bugs=bugs) as (_, client):
            payer = await _account(client, "payer", funds="100")
            payee = await _account(client, "payee")
            moved = (
                await client.call(
                    "Transfer", from_account=payer.account_id, to_account=payee.account_id, amount=amount
                )
            ).message
            deposited = (await client.call("Deposit", account_id=payee.account_id, amount=amount)).message
            booked[(side_name, bool(bugs))] = (moved.amount, deposited.amount)
    assert booked[("bank", True)] == (bank, bank)
    assert booked[("bk", True)][0] == bk_buggy
    assert booked[("bk", False)][0] == bk_fixed
    assert booked[("bk", True)][1] == booked[("bk", False)][1] == bk_fixed  # Deposit: half-up on BK too


async def test_wrong_code_answers_invalid_argument_for_an_unknown_ref_on_bk_only() -> None:
    """Planted bug "wrong-code": an unknown client_ref is NOT_FOUND from Bank and from BK fixed,
    INVALID_ARGUMENT from BK with the bug, with the same details."""
    seen = {}
    for side_name, bugs in (("bank", BUGS), ("bk", BUGS), ("bk", {"fee-rounding", "frozen-flag"})):
        async with connected(side_name, bugs=bugs) as (_, client):
            answer = await client.call("GetAccountByRef", client_ref="nobody")
            seen[(side_name, "wrong-code" in bugs)] = (answer.code, answer.details)
    assert seen == {
        ("bank", True): ("NOT_FOUND", "unknown client ref"),
        ("bk", True): ("INVALID_ARGUMENT", "unknown client ref"),
        ("bk", False): ("NOT_FOUND", "unknown client ref"),
    }


async def test_frozen_flag_hides_a_freeze_from_reads_by_ref_on_bk_only() -> None:
    """Planted bug "frozen-flag": GetAccountByRef says frozen false for a frozen account on BK with the
    bug; Freeze's answer and ListAccounts say true; Bank and BK fixed say true everywhere."""
    seen = {}
    for side_name, bugs in (("bank", BUGS), ("bk", BUGS), ("bk", set())):
        async with connected(side_name, bugs=bugs) as (_, client):
            account = await _account(client, "ref-1")
            frozen = (await client.call("Freeze", account_id=account.account_id)).message.frozen
            by_ref = (await client.call("GetAccountByRef", client_ref="ref-1")).message.frozen
            listed = [a.frozen for a in (await client.call("ListAccounts")).message.accounts]
            seen[(side_name, bool(bugs))] = (frozen, by_ref, listed)
    assert seen == {
        ("bank", True): (True, True, [True]),
        ("bk", True): (True, False, [True]),
        ("bk", False): (True, True, [True]),
    }


async def test_bank_has_no_bugs_and_unknown_bugs_are_refused() -> None:
    """Bugs are BK's: Bank served with them behaves as without; a bug name not planted is an error."""
    bank = await serve("bank", bugs=BUGS)
    try:
        assert bank.book.bugs == frozenset()
    finally:
        await bank.stop()
    with pytest.raises(ValueError, match="unknown planted bugs"):
        await serve("bk", bugs={"no-such-bug"})


async def test_each_side_pages_accounts_with_its_own_tokens(side: tuple[Served, Client]) -> None:
    """ListAccounts pages by client_ref with Bank's offsets or BK's opaque tokens; the other's is refused."""
    served, client = side
    for index in range(5):
        await _account(client, f"ref-{index}")
    refs, tokens, token = [], [], ""
    while True:
        page = (await client.call("ListAccounts", page_size=2, page_token=token)).message
        refs += [a.client_ref for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
        tokens.append(token)
    assert refs == [f"ref-{index}" for index in range(5)]
    if served.side == "bank":
        assert tokens == ["2", "4"]
        foreign = "cmVmLTE="
    else:
        assert tokens == ["cmVmLTE=", "cmVmLTM="]
        foreign = "2"
    refused = await client.call("ListAccounts", page_size=2, page_token=foreign)
    assert (refused.code, refused.details) == ("INVALID_ARGUMENT", "unknown page token")


async def test_a_stopped_side_is_unavailable_and_a_restart_serves_the_same_book_on_the_same_port() -> None:
    """stop(): calls find no server (UNAVAILABLE); restart(): the same book answers on the same address."""
    served = await serve("bank")
    try:
        address = served.address
        async with aio.insecure_channel(address) as channel:
            account = await _account(Client(channel), "ref-1", funds="12.5")
        await served.stop()
        assert not served.running
        async with aio.insecure_channel(address) as channel:
            down = await Client(channel, timeout=5).call("GetBalance", account_id=account.account_id)
        assert down.code == "UNAVAILABLE"
        await served.restart()
        assert (served.running, served.address) == (True, address)
        async with aio.insecure_channel(address) as channel:
            # the refused connection above may still be in its reconnect backoff (gRPC shares it between
            # channels to one address): a client waits for the server back, as a client would
            await asyncio.wait_for(channel.channel_ready(), 10)
            assert await _balance(Client(channel), account.account_id) == "12.50"
    finally:
        await served.stop()


async def test_a_sequential_workload_leaves_equal_books_with_the_bugs_off() -> None:
    """The same seeded workload, one client, against Bank and against BK fixed: equal books, every intent
    exercised, the same status for every call (the same-account transfers refused on both sides)."""
    results, books = {}, {}
    for side_name in ("bank", "bk"):
        async with connected(side_name, bugs=set()) as (served, _):
            results[side_name] = await run_workload(served.address, seed=11, clients=1, calls=120)
            books[side_name] = await book_of(served.address)
    bank, bk = results["bank"].calls, results["bk"].calls
    assert [(c.intent, c.method) for c in bank] == [(c.intent, c.method) for c in bk]
    assert len(bank) == 120
    assert {c.intent for c in bank} == set(INTENTS)
    differing = [
        (c.intent, c.answer.code, d.answer.code)
        for c, d in zip(bank, bk, strict=True)
        if c.answer.code != d.answer.code
    ]
    assert results["bank"].of(intent="same-account")
    assert differing == []
    assert books["bank"] == books["bk"]
    assert len(books["bank"]) == 3
    assert any(rounds_apart(c.request["amount"]) for c in bank if c.method == "Transfer" and c.answer.ok)


async def test_with_the_bugs_on_the_books_differ_only_where_a_transfer_rounded_apart() -> None:
    """With BK's bugs on, the same workload leaves the books different only in the amounts and balances of
    accounts that a transfer rounding apart touched."""
    results, books = {}, {}
    for side_name in ("bank", "bk"):
        async with connected(side_name) as (served, _):
            results[side_name] = await run_workload(served.address, seed=11, clients=2, calls=80)
            books[side_name] = await book_of(served.address)
    touched = set()
    for call in results["bank"].calls:
        if call.method == "Transfer" and call.answer.ok and rounds_apart(call.request["amount"]):
            touched.add(call.request["from_account"])
            touched.add(call.request["to_account"])
    refs = {
        call.answer.message.account_id: call.request["client_ref"]
        for call in results["bank"].calls
        if call.method == "OpenAccount"
    }
    differing = {ref for ref in books["bank"] if books["bank"][ref] != books["bk"][ref]}
    assert differing
    assert differing <= {refs[account] for account in touched}
    for ref in differing:
        bank, bk = books["bank"][ref], books["bk"][ref]
        assert (bank["owner"], bank["frozen"]) == (bk["owner"], bk["frozen"])
        assert [(d, other) for d, _, other in bank["movements"]] == [
            (d, other) for d, _, other in bk["movements"]
        ]
