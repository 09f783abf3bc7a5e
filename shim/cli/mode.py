"""`shim mode show|set|history`: the admin API from the command line.

The address is --admin HOST:PORT, or the config's `[admin] listen`, or the
default 127.0.0.1:9465; the token is
read from the environment variable the config names (SHIM_ADMIN_TOKEN by
default). Exit status: 0 done, 1 refused (the reason is printed), 2 the admin
API could not be reached or the command was wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc import aio

from shim import config as config_mod
from shim._proto.shim.v1 import admin_pb2 as pb
from shim._proto.shim.v1 import admin_pb2_grpc as pb_grpc
from shim.admin import default_who
from shim.admin_settings import ADMIN_LISTEN, AdminSettings, is_loopback
from shim.errors import ConfigError, ShimError
from shim.terminal_text import printable
from shim.units import parse_duration

EXIT_REFUSED = 1
EXIT_FAILED = 2
_TIMEOUT = 120.0  # a switch waits for the calls in flight


def _pause(text: str) -> float:
    """A duration ("2s", "500ms"), with its unit as every other duration."""
    try:
        return parse_duration("--pause", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--pause: ")) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    mode = commands.add_parser("mode", help="show, switch or audit which side answers (the admin API)")
    actions = mode.add_subparsers(dest="action", required=True)
    show = actions.add_parser(
        "show", help="the default mode and every method's own, and each replica's view of them"
    )
    switch = actions.add_parser("set", help="switch the default mode, or some methods' modes")
    switch.add_argument("mode", choices=config_mod.MODES)
    switch.add_argument(
        "--method",
        metavar="M",
        action="append",
        default=[],
        help='"pkg.Svc/Method"; repeatable (none: the default)',
    )
    switch.add_argument("--reason", required=True, help="why (audited)")
    switch.add_argument("--who", default=default_who(), help="who asks (audited; default: the user)")
    switch.add_argument(
        "--force", action="store_true", help="promote to bk-primary or bk although the gate fails"
    )
    switch.add_argument(
        "--retire-bank", action="store_true", help="confirm a switch to bk (Bank no longer mirrored)"
    )
    switch.add_argument(
        "--pause",
        metavar="DURATION",
        type=_pause,
        default=0.0,
        help="how long the clients' calls may wait for this switch, at most the grace period (default: the"
        " config's switch_pause); a switch that would hold them longer is refused",
    )
    history = actions.add_parser("history", help="the mode changes, newest first")
    history.add_argument("--limit", type=_positive, default=50, help="how many (default 50)")
    for parser in (show, switch, history):
        parser.add_argument("--config", metavar="FILE", help="the shim's config (its [admin] table)")
        parser.add_argument(
            "--admin",
            metavar="HOST:PORT",
            type=_admin_address,
            help="the admin API, on this host (default: the config's, else 127.0.0.1:9465)",
        )


def _admin_address(value: str) -> str:
    """HOST:PORT (or a unix: socket) on this machine: the admin API listens on loopback only, and its token
    would cross the network in clear."""
    if not value.startswith(("unix:", "unix-abstract:")):
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise argparse.ArgumentTypeError(
                f"{value!r} is not HOST:PORT (the admin API's, e.g. 127.0.0.1:9465)"
            )
    if not is_loopback(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not on this host: the admin API listens on loopback only (its token would cross"
            " the network in clear); run shim mode on the shim's host"
        )
    return value


async def run(args: argparse.Namespace) -> int:
    settings = config_mod.load_file(args.config) if args.config else {}
    admin = config_mod.section(settings, AdminSettings)
    address = args.admin or admin.listen or ADMIN_LISTEN
    if address.rpartition(":")[2] == "0":  # the config's: --admin takes no port 0
        raise ShimError(
            f"the admin API's address in the config ([admin] listen) is {printable(address)}: port 0, so the"
            ' shim picked its port as it started, named on its ready line ("admin"); give that with --admin'
            " HOST:PORT"
        )
    token_env = admin.token_env
    token = os.environ.get(token_env, "")
    if not token:
        said = "empty" if token_env in os.environ else "not set"
        raise ShimError(f"${token_env} is {said}: the admin API needs its token")
    metadata = (("authorization", f"Bearer {token}"),)
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        try:
            if args.action == "show":
                _print_modes(await stub.GetModes(pb.GetModesRequest(), metadata=metadata, timeout=_TIMEOUT))
            elif args.action == "set":
                before = await stub.GetModes(pb.GetModesRequest(), metadata=metadata, timeout=_TIMEOUT)
                request = pb.SetModeRequest(
                    mode=args.mode,
                    methods=args.method,
                    reason=args.reason,
                    who=args.who,
                    force=args.force,
                    retire_bank=args.retire_bank,
                    pause=args.pause,
                )
                # a switch holds calls for its pause at most: the answer comes within it, and the gate's time
                after = await stub.SetMode(request, metadata=metadata, timeout=_TIMEOUT + args.pause)
                if unchanged := _already(before, args.mode, args.method):
                    print(f"nothing changed: {unchanged}")
                _print_modes(after)
            else:
                answer = await stub.ModeHistory(
                    pb.ModeHistoryRequest(limit=args.limit), metadata=metadata, timeout=_TIMEOUT
                )
                if not answer.changes:
                    print("no mode change recorded")
                for change in answer.changes:
                    at = datetime.fromtimestamp(change.at, UTC).isoformat(timespec="seconds")
                    forced = " (forced)" if change.forced else ""
                    print(  # stored text (scope, who, reason): control characters escaped
                        f"{at}  {printable(change.scope):<30} {printable(change.from_mode) or '(none)'} ->"
                        f" {printable(change.to_mode)}{forced}  by {printable(change.who)}:"
                        f" {printable(change.reason)}"
                    )
        except aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE and "failed to connect" in (error.details() or ""):
                print(
                    f"shim mode: error: no admin API answers at {printable(address)}: is shim serve running"
                    f" there, with ${token_env} set (or [admin] listen pointing elsewhere)?"
                    f" ({printable(error.details() or '')})",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            refused = error.code() in (
                grpc.StatusCode.ABORTED,  # a switch not applied: try again
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            # INTERNAL: a switch recorded and not yet applied on the replica asked (1: not done, as refused)
            unapplied = error.code() is grpc.StatusCode.INTERNAL
            details = printable(error.details() or "")
            print(f"shim mode: {'refused' if refused else 'error'}: {details}", file=sys.stderr)
            return EXIT_REFUSED if refused or unapplied else EXIT_FAILED
    return 0


def _already(before: pb.Modes, mode: str, methods: list[str]) -> str:
    """What was in `mode` already, when every scope a switch named was ("": something changed)."""
    if not methods:
        return f"the default mode is {mode} already" if before.default_mode == mode else ""
    named = [m.lstrip("/") for m in methods]
    if any(before.methods.get(m) != mode for m in named):
        return ""
    return f"{', '.join(named)} {'is' if len(named) == 1 else 'are'} in {mode} mode already"


def _print_modes(modes: pb.Modes) -> None:
    print(f"default: {printable(modes.default_mode)}")
    for method, mode in sorted(modes.methods.items()):
        print(f"{printable(method)}: {printable(mode)}")
    if not modes.replicas:
        return
    print(f"replicas ({len(modes.replicas)}; silent: not heard from within {modes.lease:g}s):")
    now = time.time()
    for replica in modes.replicas:
        own = "".join(f", {printable(m)}: {printable(v)}" for m, v in sorted(replica.methods.items()))
        since = datetime.fromtimestamp(replica.since, UTC).isoformat(timespec="seconds")
        flags = ("  SILENT" if replica.silent else "") + (
            "  DIFFERS from the store" if replica.differs else ""
        )
        print(  # stored text: control characters escaped
            f"  {printable(replica.replica)}  default: {printable(replica.default_mode)}{own}"
            f"  since {since}  heard {max(now - replica.heartbeat, 0):.1f}s ago{flags}"
        )
