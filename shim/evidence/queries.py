"""The report's queries: `build_report` counts the comparisons in the store.

Over 400 lines: every SQL statement of the report is here (tests/test_boundaries.py keeps the shim's
SQL in the store but for these), one method per question the report asks of the comparisons.

`build_report(store, since=..., until=..., relative=..., absolute=..., min_sampled=...)` reads the
comparisons recorded between `since` and `until` (unix times, both included),
all of its queries in one read snapshot (`Store.snapshot`: each counts the same rows), and returns a
`Report` of frozen values (shim.evidence.model), one `MethodReport` per method. It prints nothing;
`shim.report` renders it and `shim.gate` judges it.

The counting is done by the database (GROUP BY, portable SQL): only the
latencies are fetched, for the percentiles, a few rows at a time (none for a
gate: `latencies=False`), and only the listed calls have
their `differences` JSON parsed. SQLite groups by sorting, so the time grows
with the rows in the window: about 8 to 10 s for a million comparisons on the
2-core development machine (`bench/report.py`), most of it in sorting the
tolerated paths by rule and in fetching the latencies.

Only mismatches count at a path: a tainted call (its key out of step) and a
skipped call (an id BK has no counterpart for) have differences that a missed
write or a missing id explains. The real differences of tainted calls are
counted apart (`tainted_paths`), so that they stay visible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from comparators import DescriptorRegistry
from shim.evidence.fleet import Replicas
from shim.evidence.model import (
    BUCKETS,
    COMPARED,
    CallRecord,
    MethodReport,
    PathStat,
    Report,
    TaintedPath,
    method_name,
)
from shim.evidence.noise import HEADER, PRESENCE, classify, kind_class, service_of
from shim.evidence.sql import _bucket_params, _bucket_sql, _marks
from shim.evidence.tally import _code, _parse, _Tally, call_record, first_request, method_report
from shim.store import Store

_CHUNK = 100  # (method, at, path, kind) per query for the path examples


def _kind_class(alias: str) -> str:
    """`shim.evidence.noise.kind_class` of the rows' kind, in SQL."""
    return f"CASE WHEN {alias}kind IN ('added', 'removed') THEN '{PRESENCE}' ELSE {alias}kind END"


Run = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]  # a statement's rows, in the report's snapshot
Each = Callable[[str, Sequence[object]], Iterable[tuple[Any, ...]]]  # ... fetched a few at a time


class _Count:
    """The queries of one report, and what they found so far, by stored method ("/pkg.Svc/Method").

    SQLite aggregates by sorting, so each query reads the rows it needs once and
    groups them by few columns. When the window holds most of the store, the
    tables are read whole (`wide`), which beats going through an index row by
    row; otherwise the indexes on `at` and `(method, at)` find the rows.
    """

    def __init__(
        self,
        run: Run,
        since: float,
        until: float,
        methods: Sequence[str],
        registry: DescriptorRegistry | None = None,
        each: Each | None = None,
    ) -> None:
        self.run = run
        self.each: Each = each if each is not None else run  # for the latencies, a row per comparison
        self.registry = registry
        self.since, self.until = since, until
        self.wanted = sorted({"/" + method_name(m) for m in methods})
        self.buckets, self.width, self.edges = 1, 0.0, [since, until]
        self.tallies: dict[str, _Tally] = {}
        self.fit(since, until)
        self.wide = False
        self.replicas = Replicas()  # who wrote what was counted

    def fit(self, first: float, last: float) -> None:
        """The series' buckets over [first, last]: the window, or the stretch of it that holds comparisons."""
        span = max(last - first, 0.0)
        self.buckets = BUCKETS if span > 0 else 1
        self.width = span / self.buckets
        self.edges = [first + self.width * i for i in range(self.buckets)] + [last]
        self.tallies = {m: _Tally(self.buckets) for m in self.wanted}

    def fit_to_the_data(self) -> None:
        """Fit the series to the first and last comparison of the window (a chart over a day holding ten
        minutes of traffic would be a line at its right end)."""
        where, params = self.where()
        sql = f"SELECT MIN(at), MAX(at) FROM comparisons WHERE {where}"
        ((first, last),) = self.run(sql, params)
        if first is not None and last is not None:
            self.fit(float(first), float(last))

    def tally(self, method: str) -> _Tally | None:
        """The tally of a method, made at its first row; None for a method not asked for."""
        found = self.tallies.get(method)
        if found is None and not self.wanted:
            found = self.tallies[method] = _Tally(self.buckets)
        return found

    def where(self, alias: str = "", *, methods: Sequence[str] | None = None) -> tuple[str, list[Any]]:
        """The window (of `methods`, by default the methods asked for), as SQL and parameters."""
        a = f"{alias}." if alias else ""
        methods = self.wanted if methods is None else methods
        sql = f"{a}at >= ? AND {a}at <= ?"
        params: list[Any] = [self.since, self.until]
        if methods:
            sql += f" AND {a}method IN ({_marks(len(methods))})"
            params += methods
        return sql, params

    def paths_where(self, alias: str = "") -> tuple[str, list[Any]]:
        """The window over comparison_paths: every row when wide, else through the (method, at) index."""
        return self.where(alias, methods=[] if self.wide else sorted(self.tallies))

    def comparisons(self) -> None:
        """Verdicts, status codes and the rest, bucket by bucket (small sorts, and the series for free). The
        status codes of the clean comparisons count apart too: those Bank answered OK are `answered`."""
        methods = f" AND method IN ({_marks(len(self.wanted))})" if self.wanted else ""
        for index in range(self.buckets):
            last = index == self.buckets - 1
            rows = self.run(
                "SELECT method, verdict, bank_code, bk_code, replica, COUNT(*), SUM(noise_sampled),"
                " SUM(CASE WHEN tolerated_count > 0 THEN 1 ELSE 0 END), MIN(at), MAX(at) FROM comparisons"
                f" WHERE at >= ? AND at {'<=' if last else '<'} ?{methods} GROUP BY 1, 2, 3, 4, 5",
                [self.edges[index], self.edges[index + 1], *self.wanted],
            )
            for method, verdict, bank_code, bk_code, replica, n, sampled, tolerated, first, latest in rows:
                t = self.tally(method)
                if t is None:
                    continue
                n = int(n)
                t.verdicts[verdict] += n
                t.replicas[replica].verdicts[verdict] += n
                self.replicas.saw(replica, first, latest, calls=n, compared=n if verdict in COMPARED else 0)
                t.codes[(_code(bank_code), _code(bk_code))] += n
                t.noise_sampled += int(sampled or 0)
                t.tolerated += int(tolerated or 0)
                if verdict in COMPARED:
                    t.compared_by_bucket[index] += n
                    t.clean_codes[(_code(bank_code), _code(bk_code))] += n
                if verdict == "mismatch":
                    t.mismatches_by_bucket[index] += n
        ((total,),) = self.run("SELECT COUNT(*) FROM comparisons", ())
        inside = sum(sum(t.verdicts.values()) for t in self.tallies.values())
        self.wide = inside * 2 >= int(total)

    def dropped(self) -> None:
        """What the replicas counted and did not store, by method, name and replica."""
        where, params = self.where()
        for method, name, replica, value, first, latest in self.run(
            f"SELECT method, name, replica, SUM(value), MIN(at), MAX(at) FROM counts WHERE {where}"
            " GROUP BY method, name, replica",
            params,
        ):
            if (t := self.tally(method)) is not None:
                t.dropped[name] += int(value or 0)
                t.replicas[replica].counted[name] += int(value or 0)
                self.replicas.saw(replica, first, latest)

    def latencies(self) -> None:
        """Every latency of the window: the percentiles need them all (nearest rank, exact). The rows are
        read a few at a time, never all at once: one per comparison."""
        if self.wide:  # + keeps SQLite off the index on at: reading the table whole is faster
            where, params = "+at >= ? AND +at <= ?", [self.since, self.until]
        else:
            where, params = self.where()
        rows = self.each(
            f"SELECT method, bank_ms, bk_ms FROM comparisons WHERE {where}"
            " AND (bank_ms IS NOT NULL OR bk_ms IS NOT NULL)",
            params,
        )
        sides: dict[str, tuple[list[float], list[float]] | None] = {}
        for method, bank_ms, bk_ms in rows:
            if method not in sides:
                t = self.tallies.get(method)
                sides[method] = (t.bank_ms, t.bk_ms) if t is not None else None
            lists = sides[method]
            if lists is None:
                continue
            if bank_ms is not None:
                lists[0].append(bank_ms)
            if bk_ms is not None:
                lists[1].append(bk_ms)

    def tolerated(self) -> None:
        """Distinct calls per rule that tolerated a difference."""
        where, params = self.paths_where()
        rows = self.run(  # method last: grouping by it first would lead SQLite to its index
            "SELECT rule, method, COUNT(DISTINCT comparison_id) FROM comparison_paths"
            f" WHERE {where} AND source = 'bk' AND rule <> '' GROUP BY rule, method",
            params,
        )
        for rule, method, n in sorted(rows, key=lambda r: (-int(r[2]), r[0])):
            if (t := self.tallies.get(method)) is not None:
                t.tolerated_by_rule.append((rule, int(n)))

    def paths(self, *, relative: float, absolute: float, min_sampled: int) -> None:
        """Each real path of the mismatches, by kind of difference (`kind_class`), its rate against Bank's own
        there (of that kind), its class and an example; and each real path of the tainted calls, with an
        example."""
        where, params = self.paths_where("p")
        rows = self.run(
            f"SELECT c.verdict, p.path, p.method, {_kind_class('p.')}, COUNT(DISTINCT p.comparison_id),"
            " MIN(p.at) FROM comparison_paths p JOIN comparisons c ON c.id = p.comparison_id"
            f" WHERE {where} AND p.source = 'bk' AND p.rule = '' AND c.verdict IN ('mismatch', 'tainted')"
            " GROUP BY 1, 2, 3, 4",
            params,
        )
        rows = [row for row in rows if row[2] in self.tallies]
        tainted = [
            (path, method, cls, n, first)
            for verdict, path, method, cls, n, first in rows
            if verdict == "tainted"
        ]
        if tainted:
            examples = self._examples(
                [(method, first, path, cls) for path, method, cls, _, first in tainted], "tainted"
            )
            for path, method, cls, n, _ in tainted:
                kind, bank, other, _, _ = examples.get((method, path, cls), ("", "null", "null", "", None))
                self.tallies[method].tainted_paths.append(
                    TaintedPath(
                        path=path,
                        kind=kind,
                        calls=int(n),
                        example_bank=_parse(bank),
                        example_bk=_parse(other),
                    )
                )
            for t in self.tallies.values():
                t.tainted_paths.sort(key=lambda p: (-p.calls, p.path, p.kind))
        real = [
            (path, method, cls, n, first)
            for verdict, path, method, cls, n, first in rows
            if verdict == "mismatch"
        ]
        if not real:
            return
        where, params = self.paths_where()
        noise = {  # Bank's noise of a kind excuses BK's differences of that kind only
            (method, path, cls): int(n)
            for path, method, cls, n in self.run(
                f"SELECT path, method, {_kind_class('')}, COUNT(DISTINCT comparison_id) FROM comparison_paths"
                f" WHERE {where} AND source = 'bank' AND rule = '' GROUP BY 1, 2, 3",
                params,
            )
        }
        examples = self._examples(
            [(method, first, path, cls) for path, method, cls, _, first in real], "mismatch"
        )
        headers = {
            (method, path)
            for path, method, _, _, _ in real
            if path.startswith(HEADER) and self.tallies[method].noise_sampled < min_sampled
        }
        services = self._service_noise(headers)
        for path, method, cls, n, _ in real:
            t = self.tallies[method]
            noise_calls, sampled, noise_of = noise.get((method, path, cls), 0), t.noise_sampled, ""
            if (method, path) in headers:
                service = service_of(method)
                pooled_calls, pooled = services.get((service, path, cls), (0, 0))
                if pooled > sampled:  # the service's other methods had calls asked twice
                    noise_calls, sampled, noise_of = pooled_calls, pooled, service
            bk_rate = int(n) / t.compared if t.compared else 0.0
            noise_rate = noise_calls / sampled if sampled else 0.0
            kind, bank, other, key, request = examples.get(
                (method, path, cls), ("", "null", "null", "", None)
            )
            t.paths.append(
                PathStat(
                    path=path,
                    kind=kind,
                    calls=int(n),
                    bk_rate=bk_rate,
                    noise_calls=noise_calls,
                    noise_rate=noise_rate,
                    noise_sampled=sampled,
                    classification=classify(
                        bk_rate,
                        noise_rate,
                        relative=relative,
                        absolute=absolute,
                        sampled=sampled,
                        min_sampled=min_sampled,
                    ),
                    example_bank=_parse(bank),
                    example_bk=_parse(other),
                    example_key=key,
                    example_request=request,
                    noise_of=noise_of,
                )
            )
        for t in self.tallies.values():
            t.paths.sort(key=lambda p: (-p.calls, p.path, p.kind))

    def _service_noise(self, headers: set[tuple[str, str]]) -> dict[tuple[str, str, str], tuple[int, int]]:
        """For each (service, header path, kind class) of the (method, path) `headers`: the calls asked twice
        whose two Bank answers differed there by that kind, and the calls asked twice, over all the service's
        methods in the window (whichever methods the report asked for: a header is the service's)."""
        if not headers:
            return {}
        where, params = self.where(methods=[])
        services = {service_of(method) for method, _ in headers}
        paths = sorted({path for _, path in headers})
        sampled: dict[str, int] = {}
        for method, n in self.run(
            f"SELECT method, SUM(noise_sampled) FROM comparisons WHERE {where} AND noise_sampled <> 0"
            " GROUP BY method",
            params,
        ):
            if (service := service_of(method)) in services:
                sampled[service] = sampled.get(service, 0) + int(n or 0)
        differed: dict[tuple[str, str, str], int] = {}
        for method, path, cls, n in self.run(
            f"SELECT method, path, {_kind_class('')}, COUNT(DISTINCT comparison_id) FROM comparison_paths"
            f" WHERE {where} AND source = 'bank' AND rule = '' AND path IN ({_marks(len(paths))})"
            " GROUP BY 1, 2, 3",
            [*params, *paths],
        ):
            if (service := service_of(method)) in services:
                differed[(service, path, cls)] = differed.get((service, path, cls), 0) + int(n)
        return {
            (service, path, cls): (n, sampled.get(service, 0)) for (service, path, cls), n in differed.items()
        }

    def _examples(
        self, firsts: list[tuple[str, float, str, str]], verdict: str
    ) -> dict[tuple[str, str, str], tuple[str, str, str, str, Any]]:
        """The earliest row of each (method, at, path, kind class) of a call with `verdict`: its kind and
        values, and the call's routing keys and first request (decoded, when kept)."""
        examples: dict[tuple[str, str, str], tuple[str, str, str, str, Any]] = {}
        for start in range(0, len(firsts), _CHUNK):
            chunk = firsts[start : start + _CHUNK]
            rows = self.run(
                "SELECT p.method, p.path, p.kind, p.bank, p.other, c.routing_key, c.payloads"
                " FROM comparison_paths p JOIN comparisons c ON c.id = p.comparison_id"
                " WHERE p.source = 'bk' AND p.rule = '' AND c.verdict = ? AND ("
                + " OR ".join(
                    [f"(p.method = ? AND p.at = ? AND p.path = ? AND {_kind_class('p.')} = ?)"] * len(chunk)
                )
                + ") ORDER BY p.at, p.comparison_id",
                [verdict, *(value for first in chunk for value in first)],
            )
            for method, path, kind, bank, other, key, payloads in rows:
                if (method, path, kind_class(kind)) not in examples:
                    examples[(method, path, kind_class(kind))] = (
                        kind,
                        bank,
                        other,
                        str(key),
                        first_request(self.registry, method, payloads),
                    )
        return examples

    def noise_mismatches(self) -> None:
        """Per bucket, the mismatches whose real paths are all noise (each by its kind of difference)."""
        noisy = {
            method: [(p.path, kind_class(p.kind)) for p in t.paths if p.classification == "noise"]
            for method, t in self.tallies.items()
        }
        noisy = {method: paths for method, paths in noisy.items() if paths}
        if not noisy:
            return
        one = f"(q.path = ? AND {_kind_class('q.')} = ?)"
        match = " OR ".join(
            f"(q.method = ? AND ({' OR '.join([one] * len(paths))}))" for paths in noisy.values()
        )
        match_params = [
            value
            for method, paths in noisy.items()
            for value in (method, *(v for pair in paths for v in pair))
        ]
        real_paths = "SELECT 1 FROM comparison_paths q WHERE q.comparison_id = c.id"
        real_paths += " AND q.source = 'bk' AND q.rule = ''"
        if self.wide:  # read the mismatches off the whole table; the EXISTS keep the methods with noise
            where, params = "+c.at >= ? AND +c.at <= ?", [self.since, self.until]
        else:
            where, params = self.where("c", methods=sorted(noisy))
        inner = self.edges[1:-1]
        rows = self.run(
            f"SELECT c.method, {_bucket_sql('c.at', inner)}, COUNT(*) FROM comparisons c"
            f" WHERE {where} AND c.verdict = 'mismatch'"
            f" AND EXISTS ({real_paths} AND ({match})) AND NOT EXISTS ({real_paths} AND NOT ({match}))"
            " GROUP BY 2, 1",  # the method last, or SQLite reads the rows through its index, method by method
            [*_bucket_params(inner), *params, *match_params, *match_params],
        )
        for method, index, n in rows:
            if (t := self.tallies.get(method)) is not None:
                t.noise_by_bucket[int(index)] += int(n)

    def calls(self, limit: int) -> tuple[CallRecord, ...]:
        """The calls that did not match, newest first, with their differences parsed."""
        if limit <= 0:
            return ()
        where, params = self.where()
        rows = self.run(
            "SELECT id, at, method, verdict, reason, routing_key, correlation_id, bank_code, bk_code,"
            f" bank_ms, bk_ms, differences, real_count + tolerated_count FROM comparisons"
            f" WHERE {where} AND verdict <> 'match'"
            " ORDER BY at DESC, id LIMIT ?",
            [*params, limit],
        )
        noise = {
            method: {(p.path, kind_class(p.kind)) for p in t.paths if p.classification == "noise"}
            for method, t in self.tallies.items()
        }
        return tuple(call_record(row, noise.get(row[2], set())) for row in rows)

    def report(self, method: str) -> MethodReport:
        return method_report(method, self.tallies[method], self.edges, fleet=len(self.replicas.seen) > 1)


async def build_report(
    store: Store,
    *,
    since: float,
    until: float,
    methods: Sequence[str] = (),
    relative: float,
    absolute: float,
    min_sampled: int,
    calls: bool = False,
    limit: int = 1000,
    registry: DescriptorRegistry | None = None,
    latencies: bool = True,
) -> Report:
    """Count the comparisons stored with `since <= at <= until` (of `methods`, when given). With the
    descriptors, each path's example shows its call's first request, where the store kept it. Without
    `latencies` (a gate's report: its criteria are counts), no latency is read, one row per comparison,
    and the report's latencies are empty."""

    def read(run: Run, each: Each) -> tuple[_Count, tuple[CallRecord, ...] | None]:
        count = _Count(run, since, until, methods, registry, each)
        count.fit_to_the_data()
        count.comparisons()
        count.dropped()
        if count.tallies:
            if latencies:
                count.latencies()
            count.tolerated()
            count.paths(relative=relative, absolute=absolute, min_sampled=min_sampled)
            count.noise_mismatches()
        return count, count.calls(limit) if calls else None

    # every query reads the same rows: a comparison stored meanwhile (a live shim stores some each
    # moment, some of them from before `until`) would be in some counts and not in others
    count, listed = await store.snapshot(lambda db: read(db.run, db.each))
    return Report(
        since=since,
        until=until,
        generated_at=time.time(),
        store=store.url,
        relative=relative,
        absolute=absolute,
        min_sampled=min_sampled,
        methods=tuple(count.report(method) for method in sorted(count.tallies)),
        calls=listed,
        limit=limit,
        replicas=count.replicas.report(),
        bk_build=await store.builds.in_service(until),
    )
