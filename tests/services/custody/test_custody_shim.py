"""The custody ledger through the shim in `shadow` mode, on its own config (shim.toml): what the shim
reports as real must be exactly BK's planted bugs, the books must agree, and the gate must say so.

Acceptance, with BK's bugs on: after a concurrent workload and a write made while Bank is stopped
(the client gets UNAVAILABLE, BK must not apply it),

- every real difference of a `mismatch` is explained by exactly one planted bug (`_attribution`),
  and every planted bug the workload triggered shows as a real mismatch;
- no benign difference is real (ids, also inside rich error details; decimals; timestamps; the
  same-account transfer Bank refuses and BK books as nothing), so nothing else is a mismatch;
- nothing is hidden: no call is `skipped`, `shadow-error` or `error`, but the write made while
  Bank was down, whose reason must say why; a call is `tainted` only on an account out of step
  that the shim then checked (both books read: found in step, or found different), or as a read
  Bank answered while a write on its account was in flight there, which the clients' own times
  confirm; and every real difference of a tainted call is a planted bug;
- the two books agree, but for the cents of the transfers that round apart;
- `shim gate` exits 1.

With BK's bugs off, the same workload on a fresh store: no real difference at all, equal books,
`shim gate` exits 0 and `shim reconcile` exits 0.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

from comparators import Comparison, Verdict
from shim.config import load_file
from shim.testing import running_shim
from tests.helpers import shim_command
from tests.services.custody import BUGS, DESCRIPTOR_SET, REGISTRY, Answer, Client, Result, serve
from tests.services.custody._attribution import Facts, explain
from tests.services.custody.workload import book_of, run_workload

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
SEED, CLIENTS, CALLS = 3, 4, 60
DOWN_AMOUNT = "77.70"  # deposited while Bank is down
_UNAVAILABLE = 14
_BANK_IDS = re.compile(r"(A|M)[1-9][0-9]*\Z")
_INDEX = re.compile(r"\[\d+\]")
# a read the primary answered while a write on its key was in flight there (`shim.shadow.together`)
_RACED = re.compile(r"answered while (\S+) was in flight at the primary on (?:its )?key '([^']*)'")
_SLACK = 0.05  # seconds between the shim's clock and the clients' (one machine), and the shim's own steps


@dataclass
class Run:
    """What one run through the shim produced."""

    result: Result
    comparisons: list[Comparison]
    books: dict[str, dict[str, dict[str, Any]]]  # side -> book_of
    config: Path
    store: Path
    down: Answer | None = None  # the write made while Bank was down
    down_ref: str = ""  # the client ref of the account it named
    bk_before_down: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, tuple[int | None, str]] = field(default_factory=dict)  # "gate" -> (exit, output)
    checks: dict[str, str] = field(default_factory=dict)  # account -> the result of its latest check


def _config(tmp_path: Path) -> Path:
    """shim.toml copied next to the descriptor set it names, as a user would lay them out."""
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    shutil.copyfile(HERE / "shim.toml", config)
    return config


async def _shim_command(*args: str) -> tuple[int | None, str]:
    """`python -m shim ARGS` (exit status, and what it printed on both streams)."""
    code, out, err = await shim_command(*args)
    return code, out + err


async def _run(tmp_path: Path, bugs: Iterable[str], *, write_while_bank_is_down: bool) -> Run:
    config = _config(tmp_path)
    store = tmp_path / "shim.db"
    settings = load_file(config)
    mode = settings.pop("mode")
    bank = await serve("bank")
    bk = await serve("bk", bugs=bugs)
    try:
        async with running_shim(
            bank.address, bk.address, mode=mode, store={"url": str(store)}, **settings
        ) as (
            shim,
            sink,
        ):
            result = await run_workload(shim.address, seed=SEED, clients=CLIENTS, calls=CALLS)
            await asyncio.wait_for(shim.drain(), timeout=60)
            if (
                shim.books.verifier is not None
            ):  # the checks of accounts out of step, retried in the background
                await asyncio.wait_for(shim.books.verifier.drain(), timeout=60)
            run = Run(result, [], {}, config, store)
            if write_while_bank_is_down:
                (opened,) = [c for c in result.of(method="OpenAccount") if c.request["client_ref"] == "c0-0"]
                run.down_ref = "c0-0"
                run.bk_before_down = await book_of(bk.address)
                await bank.stop()
                async with aio.insecure_channel(shim.address) as channel:
                    run.down = await Client(channel, timeout=5).call(
                        "Deposit", account_id=opened.answer.message.account_id, amount=DOWN_AMOUNT
                    )
                await asyncio.wait_for(shim.drain(), timeout=60)
            run.comparisons = sink.comparisons
            if shim.books.verifier is not None:
                run.checks = {v.key: v.result for v in shim.books.verifier.results}
        if not bank.running:
            await bank.restart()
        run.books = {"bank": await book_of(bank.address), "bk": await book_of(bk.address)}
        run.commands["gate"] = await _shim_command("gate", "--config", str(config), "--store", str(store))
        if not write_while_bank_is_down:
            run.commands["reconcile"] = await _shim_command(
                "reconcile",
                "--config",
                str(config),
                "--store",
                str(store),
                "--bank",
                bank.address,
                "--bk",
                bk.address,
            )
        return run
    finally:
        await bank.stop()
        await bk.stop()


# -- judging a run ---------------------------------------------------------------------------------------


def _request(comparison: Comparison) -> Any:
    info = REGISTRY.method(comparison.method)
    assert info is not None, comparison.method
    return REGISTRY.message_class(info.input_type).FromString(comparison.exchange.requests[0])


def _short(request: Any) -> str:
    return " ".join(f"{f.name}={v!r}" for f, v in request.ListFields())


def _is_down_write(comparison: Comparison) -> bool:
    return comparison.method.endswith("/Deposit") and comparison.exchange.primary.code == _UNAVAILABLE


class _Findings:
    """Problems, grouped by what they are, with a count and one example each."""

    def __init__(self) -> None:
        self.groups: dict[str, list[str]] = {}

    def add(self, what: str, example: str) -> None:
        self.groups.setdefault(what, []).append(example)

    def lines(self) -> list[str]:
        return [
            f"{what} ({len(examples)} calls), e.g. {examples[0]}" for what, examples in self.groups.items()
        ]


def _verdicts(run: Run) -> str:
    by_method: dict[str, Counter[str]] = {}
    for c in run.comparisons:
        by_method.setdefault(c.method.rpartition("/")[2], Counter())[c.verdict.value] += 1
    total = Counter(c.verdict.value for c in run.comparisons)
    lines = [f"{len(run.comparisons)} comparisons of {len(run.result.calls)} workload calls: {dict(total)}"]
    lines += [f"  {method}: {dict(counts)}" for method, counts in sorted(by_method.items())]
    return "\n".join(lines)


def _judge_comparisons(run: Run, facts: Facts, bugs: frozenset[str], findings: _Findings) -> None:
    reported: set[str] = set()
    for c in run.comparisons:
        method = c.method.rpartition("/")[2]
        request = _request(c)
        call = f"{method}({_short(request)})"
        if _is_down_write(c):
            if c.verdict not in (Verdict.SKIPPED, Verdict.SHADOW_ERROR) or not c.reason:
                differences = [(d.path, d.bank, d.bk) for d in c.real_differences]
                findings.add(
                    f"the write made while Bank was down is {c.verdict.value}, not skipped with a reason",
                    f"{call}: reason {c.reason!r}, real differences {differences}",
                )
            continue
        real = [f"{d.path} {d.bank!r}->{d.bk!r}" for d in c.real_differences]
        if c.verdict in (Verdict.SKIPPED, Verdict.SHADOW_ERROR, Verdict.ERROR):
            findings.add(f"{c.verdict.value} {method}", f"{call}: {c.reason} | real differences: {real}")
        if c.verdict is Verdict.TAINTED and (raced := _RACED.match(c.reason)):
            writer, key = raced.group(1).rpartition("/")[2], raced.group(2)
            if not _raced(run.result, c, writer, key):
                findings.add(
                    f"tainted {method} by a write in flight on its key when the clients had none there",
                    f"{call}: {c.reason} | real differences: {real}",
                )
        elif c.verdict is Verdict.TAINTED:
            keys = c.exchange.routing_key.split(",")
            if not any(run.checks.get(key) in ("in-step", "differs") for key in keys):
                checks = [run.checks.get(k) for k in keys]
                findings.add(
                    f"tainted {method} on an account the shim never checked",
                    f"{call}: {c.reason} | checks {checks} | real differences: {real}",
                )
        if c.verdict not in (Verdict.MISMATCH, Verdict.TAINTED):
            continue
        for d in c.real_differences:
            explained = explain(method, request, d.path, d.bank, d.bk, facts) & bugs
            if len(explained) == 1:
                if c.verdict is Verdict.MISMATCH:
                    reported |= explained
                continue
            path = _INDEX.sub("[*]", d.path)
            findings.add(
                f"{c.verdict.value} {method} at {path} ({d.kind}) explained by no planted bug",
                f"{call}: {d.bank!r} -> {d.bk!r}",
            )
    for bug in sorted((facts.triggered() & bugs) - reported):
        findings.add(f"planted bug {bug!r} triggered but never reported as a real mismatch", "-")


def _raced(result: Result, read: Comparison, writer: str, key: str) -> bool:
    """Whether, by the clients' own times, a `writer` call naming `key` was under way while the shim had
    `read` under way at Bank (from when it received it until Bank answered it, with a clock's slack)."""
    start = read.exchange.started_at
    end = start + read.exchange.primary.latency + _SLACK
    return any(
        call.method == writer and key in call.request.values() and call.sent < end and start < call.ended
        for call in result.calls
    )


def _judge_answers(run: Run, findings: _Findings) -> None:
    """The clients got Bank's answers: Bank's ids, in the answers and in the rich details."""
    for call in run.result.calls:
        ids = [v.subject for v in call.answer.violations]
        for message in call.answer.fields():
            ids += [message.get(k, "") for k in ("account_id", "movement_id", "from_account", "to_account")]
        foreign = [i for i in ids if i and not _BANK_IDS.match(i)]
        if foreign:
            findings.add(f"a client got ids that are not Bank's from {call.method}", f"{foreign}")


def _judge_down_write(run: Run, findings: _Findings) -> None:
    if run.down is None:
        return
    if run.down.code != "UNAVAILABLE":
        findings.add("the write made while Bank was down did not get UNAVAILABLE", run.down.code)
    before, after = run.bk_before_down.get(run.down_ref), run.books["bk"].get(run.down_ref)
    if before != after:
        findings.add(
            "BK applied the write made while Bank was down",
            f"{run.down_ref} movements on BK {before and before['movements'][-1:]} -> "
            f"{after and after['movements'][-2:]}",
        )
    if not any(_is_down_write(c) for c in run.comparisons):
        findings.add("the write made while Bank was down left no record", "-")


def _judge_books(run: Run, facts: Facts, bugs: frozenset[str], findings: _Findings) -> None:
    bank, bk = run.books["bank"], run.books["bk"]
    if set(bank) != set(bk):
        findings.add("the books list different accounts", f"{sorted(set(bank) ^ set(bk))}")
    allowed = facts.touched_refs if "fee-rounding" in bugs else frozenset()
    for ref in sorted(set(bank) & set(bk)):
        left, right = bank[ref], bk[ref]
        if left == right:
            continue
        same_shape = (left["owner"], left["frozen"], [(d, o) for d, _, o in left["movements"]]) == (
            right["owner"],
            right["frozen"],
            [(d, o) for d, _, o in right["movements"]],
        )
        if ref not in allowed or not same_shape:
            findings.add("the books differ beyond the planted bugs", f"{ref}: Bank {left} | BK {right}")


async def test_the_shim_reports_exactly_the_planted_bugs_and_the_gate_fails(tmp_path: Path) -> None:
    """With BK's bugs on: every real mismatch is a planted bug and every triggered bug is reported, no
    benign difference is real, nothing is hidden, the write made while Bank is down does not reach
    BK, the books agree but for the planted bugs, and `shim gate` exits 1."""
    bugs = frozenset(BUGS)
    run = await _run(tmp_path, bugs, write_while_bank_is_down=True)
    facts = Facts.of(run.result)
    assert facts.triggered() == bugs  # the workload triggers every planted bug
    findings = _Findings()
    _judge_answers(run, findings)
    _judge_down_write(run, findings)
    _judge_comparisons(run, facts, bugs, findings)
    _judge_books(run, facts, bugs, findings)
    code, output = run.commands["gate"]
    if code != 1:
        findings.add(f"shim gate exited {code}, not 1", output)
    assert not findings.groups, "\n".join([_verdicts(run), *findings.lines()])


async def test_with_bk_fixed_the_same_workload_passes_the_gate(tmp_path: Path) -> None:
    """With BK's bugs off, on a fresh store: no real difference, nothing hidden, equal books, and both
    `shim gate` and `shim reconcile` exit 0."""
    bugs: frozenset[str] = frozenset()
    run = await _run(tmp_path, bugs, write_while_bank_is_down=False)
    facts = Facts.of(run.result)
    findings = _Findings()
    _judge_answers(run, findings)
    _judge_comparisons(run, facts, bugs, findings)
    _judge_books(run, facts, bugs, findings)
    for command, (code, output) in run.commands.items():
        if code != 0:
            findings.add(f"shim {command} exited {code}, not 0", output)
    assert not findings.groups, "\n".join([_verdicts(run), *findings.lines()])
