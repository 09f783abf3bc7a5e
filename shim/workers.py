"""`shim serve --workers N`: N shim processes serving one port, each with its own event loop.

The shim's event loop is one thread: past one core's worth of calls it is the
bottleneck. With `workers = N` the `shim serve` process becomes a supervisor:
it opens the store once (so its migrations run once), reserves the port (a
free one for port 0), and starts N worker processes (spawned, never forked),
each a whole shim listening on that port with SO_REUSEPORT; the kernel spreads
the clients' connections over them (on Envoy, each worker runs its own Envoy on the
port, which it starts and stops). Each worker has its own upstream channels,
shadow dispatcher, lanes, id map in memory and comparison worker; they share
the store, as replicas of a fleet do.

Signals: SIGTERM and SIGINT drain every worker (a second one stops them at
once), and the supervisor exits 0, a worker still starting (ended by the SIGTERM
passed on) included; SIGHUP reaches every worker (certificate and config reload), a
worker still starting once it serves. A worker that exits on
its own stops the others, and the supervisor exits 1: a process manager then
restarts the whole shim. The supervisor logs one `ready` line (with `workers`)
once every worker serves; each worker logs its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

import structlog

from shim import _hangups
from shim._orphans import deaf_to_ctrl_c, die_with_parent, leave_ctrl_c_to_parent
from shim.admin_settings import ADMIN_LISTEN
from shim.config import Config

_log = structlog.get_logger("shim")
_START_TIMEOUT = 60.0  # seconds a worker may take to start serving


def reserve_port(listen: str) -> tuple[str, socket.socket]:
    """`listen` with its port fixed (a free one for port 0), and a socket holding it until the workers
    listen (bound with SO_REUSEPORT, never listening: it takes no connections)."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((bare or "0.0.0.0", int(port)))
    except OSError:
        holder.close()
        raise
    return f"{host}:{holder.getsockname()[1]}", holder


def _worker(config: Config, index: int, ready: Connection, args: argparse.Namespace | None) -> None:
    """One worker process: a whole shim on the shared port."""
    _hangups.record()  # born with SIGHUP blocked: one sent meanwhile is recorded, applied once it serves
    leave_ctrl_c_to_parent()  # the supervisor passes a stop on (see shim._orphans)
    die_with_parent(signal.SIGTERM)  # a supervisor killed with -9: the worker drains and ends
    os.setpgid(0, 0)  # the supervisor relays signals: a terminal's Ctrl-C must not reach it twice
    from shim import logs
    from shim.cli import serve as serve_command

    logs.configure()
    structlog.contextvars.bind_contextvars(worker=index)

    def reread() -> Config:  # SIGHUP: the config file and flags again, on this worker's port
        assert args is not None
        new = serve_command.settings_of(args)
        return _of_worker(replace(new, serving=replace(new.serving, listen=config.serving.listen)), index)

    try:
        serving = serve_command.serve(
            config, ready=lambda: ready.send(True), reread=reread if args is not None else None
        )
        code = serve_command.run(serving, config.serving.event_loop)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a start error: said once, by the worker that met it
        print(f"shim: error: worker {index}: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


def supervise(config: Config, args: argparse.Namespace | None = None) -> int:
    """Run `config.serving.workers` shim processes on one port until a signal (or a worker's exit)."""
    from shim.logs import configure

    configure()
    try:
        listen, holder = reserve_port(config.serving.listen)
    except OSError as exc:
        print(f"shim: error: cannot listen on {config.serving.listen}: {exc.strerror}", file=sys.stderr)
        return 2
    if config.bk is not None and not config.ordering.of_workers(config.serving.workers).across_replicas:
        _log.warning(
            "workers order only their own calls",
            consequence="calls on one key through different client connections may reach different workers,"
            " and BK in another order than Bank's: their keys may show differences the order made",
            remedy="ordering.across_workers = true (the default) orders them across the workers through"
            " their store (docs/fleet-order.md)",
        )
    with holder:
        if config.bk is not None or config.record.into == "store":  # every worker then opens the store
            asyncio.run(_prepare_store(config.store.url))
        worker_config = replace(config, serving=replace(config.serving, listen=listen))
        if config.record.into == "store" and not config.record.id:  # the workers record into one recording
            from shim.recording.into_store import new_recording_id

            worker_config = replace(worker_config, record=replace(config.record, id=new_recording_id()))
        context = multiprocessing.get_context("spawn")
        processes: list[Any] = []
        readies: list[Connection] = []
        received: list[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            received.append(signum)

        # taken from before the first worker starts: a stop while they start is the supervisor's to pass on
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {s: signal.signal(s, on_signal) for s in signals}
        received.extend([signal.SIGHUP] if _hangups.take() else [])  # recorded while `shim serve` started
        try:
            # a terminal's Ctrl-C reaches the workers' group as they start; a SIGHUP passed on waits for them
            with deaf_to_ctrl_c(), _hangups.held():
                for index in range(config.serving.workers):
                    if received:  # stopped while starting: start no more
                        break
                    receiver, sender = context.Pipe(duplex=False)
                    process = context.Process(
                        target=_worker,
                        args=(_of_worker(worker_config, index), index, sender, args),
                        name=f"shim worker {index}",
                    )
                    process.start()
                    sender.close()
                    processes.append(process)
                    readies.append(receiver)
            return _watch(config, listen, processes, readies, received)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for process in processes:  # whatever happened, no worker outlives the supervisor
                if process.is_alive():
                    process.kill()
                process.join()


def _of_worker(config: Config, index: int) -> Config:
    """Worker `index`'s config: it serves its metrics and its admin API on the configured ports + index
    (port 0: a free one each), and orders its writes across the workers (`ordering.across_workers`)."""

    def shifted(address: str) -> str:
        if not address:
            return address
        host, _, port = address.rpartition(":")
        return f"{host}:{int(port) + index if int(port) else 0}"

    admin = config.admin.listen or (ADMIN_LISTEN if os.environ.get(config.admin.token_env) else "")
    return replace(
        config,
        serving=replace(config.serving, metrics_listen=shifted(config.serving.metrics_listen)),
        admin=replace(config.admin, listen=shifted(admin)),
        ordering=config.ordering.of_workers(config.serving.workers),
    )


async def _prepare_store(url: str) -> None:
    """Open and migrate the store once, before the workers open it together."""
    from shim.store import Store

    store = Store.open(url)
    await store.start()
    await store.close()


def _watch(
    config: Config, listen: str, processes: list[Any], readies: list[Connection], received: list[int]
) -> int:
    waiting = set(range(len(processes)))
    hangup_due: set[int] = set()  # the workers a SIGHUP came for while they started: passed on once ready
    started = time.monotonic()
    stopping = False
    handled = 0
    while True:
        for signum in received[handled:]:
            handled += 1
            if signum == signal.SIGHUP:
                _relay([p for i, p in enumerate(processes) if i not in waiting], signal.SIGHUP)
                hangup_due |= waiting
                continue
            if stopping:  # a second signal: the workers stop at once, as a single shim would
                _relay(processes, signal.SIGKILL)
                return 128 + signum
            stopping = True
            _log.info("stopping", workers=len(processes), grace_period=config.serving.grace_period)
            _relay(processes, signal.SIGTERM)
        for index in list(waiting):
            with contextlib.suppress(EOFError, OSError):
                if readies[index].poll():
                    readies[index].recv()
                    waiting.discard(index)
                    if index in hangup_due:
                        hangup_due.discard(index)
                        _relay([processes[index]], signal.SIGHUP)
                    if not waiting:
                        _log.info("ready", listen=listen, workers=len(processes), mode=config.mode)
        if waiting and not stopping and time.monotonic() - started > _START_TIMEOUT:
            _log.error("workers did not start in time", waiting=sorted(waiting))
            _relay(processes, signal.SIGKILL)
            return 1
        ended = [p for p in processes if p.exitcode is not None]
        if stopping and len(ended) == len(processes):
            codes = [p.exitcode for p in processes]
            _log.info("stopped", workers=len(processes), exit_codes=codes)
            # a worker ended by the SIGTERM passed on (still starting, with no handler yet) stopped as asked
            return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
        if ended and not stopping:
            failed = ended[0]
            _log.error(
                "a worker exited; stopping the others",
                worker=processes.index(failed),
                exit_code=failed.exitcode,
            )
            stopping = True
            _relay(processes, signal.SIGTERM)
            for process in processes:
                process.join()
            return 2 if waiting and failed.exitcode == 2 else 1
        wait([p.sentinel for p in processes] + [readies[i] for i in waiting], timeout=0.2)


def _relay(processes: list[Any], signum: int) -> None:
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
