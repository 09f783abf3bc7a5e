"""The admin API (`proto/shim/v1/admin.proto`): modes at run time, guarded and audited.

It listens on `admin.listen` (a loopback address by default, and never without a token): every call carries
"authorization: Bearer TOKEN", the value of the variable `admin.token_env` names (SHIM_ADMIN_TOKEN).

SetMode, in order:

1. checks the request: a known mode, methods the descriptors know, a reason;
2. refuses, unless `force` (audited as forced): a switch leaving the answering side without a method's
   writes (`shim._mode_guards`); retiring Bank (`bk`) without `retire_bank`, or while keys are out of step;
3. promotion (to `bk-primary` or `bk` from a mode where Bank answered), and retiring Bank from
   `bk-primary`, run the gate on the store's evidence for the methods concerned (the default mode:
   `gate.methods`, else every method with evidence; replicas in other modes fail it) and refuses when
   it fails, saying which criteria failed, unless `force` (audited as forced);
4. switches every live replica sharing the store and records the change, as one step (`shim.fleet`).
"""

from __future__ import annotations

import getpass
import hmac
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import grpc
import structlog
from grpc import aio

from comparators import DescriptorRegistry
from shim._mode_guards import (
    RETIRE_KEPT,
    RETIRE_OUT_OF_STEP,
    UNRETIRE,
    WRITES_MISSED,
    bank_called,
    newly_missed,
    out_of_step_said,
    stretch_mark,
)
from shim._promotion import gate_failures
from shim._proto.shim.v1 import admin_pb2 as pb
from shim._proto.shim.v1 import admin_pb2_grpc as pb_grpc
from shim.admin_settings import ADMIN_LISTEN, AdminSettings
from shim.config import MODES, Config
from shim.errors import ShimError, StartupError
from shim.fleet import Fleet, Unapplied, Unswitched
from shim.gate import UNMIRRORED
from shim.modes import DEFAULT, Modes
from shim.steps import Steps
from shim.store import NO_KEY, ModeChange, Store, StoreError


class Switchable(Protocol):
    """What the admin API uses of a running shim (`shim.app.Shim`)."""

    @property
    def config(self) -> Config: ...
    @property
    def modes(self) -> Modes: ...
    @property
    def fleet(self) -> Fleet | None: ...
    @property
    def store(self) -> Store | None: ...
    @property
    def dispatchers(self) -> Mapping[str, object]: ...
    @property
    def registry(self) -> DescriptorRegistry | None: ...
    @property
    def steps(self) -> Steps | None: ...
    async def evidence_stored(self, within: float) -> bool: ...


_log = structlog.get_logger("shim.admin")
_BANK_ANSWERS = ("bank", "shadow")


async def _out_of_step(shim: Switchable) -> str:
    """The keys out of step in the store, and those this replica marked and has not stored yet, said briefly
    ("": none)."""
    assert shim.store is not None
    try:
        stored = await shim.store.marks.out_of_step()
    except StoreError as exc:
        raise Refused(grpc.StatusCode.UNAVAILABLE, f"the store cannot be read: {exc}") from exc
    held = shim.steps
    here = [*held.keys, *([NO_KEY] if held.no_key is not None else [])] if held is not None else []
    keys = list(dict.fromkeys([*(m.key for m in stored), *here]))
    return out_of_step_said(keys) if keys else ""


async def _still_in_step(shim: Switchable) -> str:
    """Once the calls in flight are over on every replica, just before Bank is retired: why not ("": none
    out of step). A mirrored write that failed while the switch waited for it marks its key only then."""
    try:
        out_of_step = await _out_of_step(shim)
    except Refused as exc:
        return str(exc)
    return RETIRE_OUT_OF_STEP.format(out_of_step) if out_of_step else ""


class Refused(ShimError):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def set_mode(
    shim: Switchable,
    mode: str,
    methods: list[str],
    reason: str,
    who: str,
    force: bool = False,
    retire_bank: bool = False,
    pause: float = 0.0,
) -> list[ModeChange]:
    """Switch the default mode (no methods) or these methods' modes; Refused says why not. `pause`: how long
    the clients' calls may wait for this switch (0: switch_pause)."""
    if mode not in MODES:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"mode {mode!r} is not one of {', '.join(MODES)}")
    grace = shim.config.serving.grace_period
    if not 0 <= pause <= grace:  # (NaN fails both)
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"pause {pause:g}s is not from 0 (switch_pause) to the grace period ({grace:g}s)",
        )
    if not reason.strip():
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a reason is required (it is audited)")
    if shim.store is None or shim.fleet is None or not shim.dispatchers:
        raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "modes can change only with a BK upstream")
    scopes = []
    for name in methods:
        path = "/" + name.lstrip("/")
        if shim.registry is None or shim.registry.method(path) is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{name} is not a method of the descriptors")
        scopes.append(path)
    scopes = scopes or [DEFAULT]
    if mode == "bk" and not retire_bank:
        raise Refused(
            grpc.StatusCode.FAILED_PRECONDITION,
            "switching to bk retires Bank (nothing is mirrored to it any more): confirm with --retire-bank",
        )
    now = time.time()
    current = shim.modes.table()
    along: list[str] = []  # retiring the default: the methods of their own in bk-primary go with it
    if mode == "bk" and DEFAULT in scopes:
        along = [scope for scope, was in current.items() if scope != DEFAULT and was == "bk-primary"]
        if kept := bank_called({s: m for s, m in current.items() if s not in along}):
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, RETIRE_KEPT.format(kept))
    changes = [
        ModeChange(
            now, who or "unknown", scope, current.get(scope) or shim.modes.of(scope), mode, reason, False
        )
        for scope in [*scopes, *along]
        if current.get(scope) != mode  # already so: nothing to change or to record
    ]
    if missed := newly_missed(current, shim.modes.default, changes, shim.config, shim.registry):
        if not force:  # the side answering some calls would lack a method's writes: stale answers
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, WRITES_MISSED.format("; ".join(missed)))
        changes = [replace(c, forced=True) for c in changes]
    unretiring = [c.scope for c in changes if c.from_mode == "bk"]
    if unretiring:  # Bank was sent nothing since it was retired: its book lacks every write since
        if not force:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, UNRETIRE.format(", ".join(unretiring), mode))
        changes = [replace(c, forced=True) if c.from_mode == "bk" else c for c in changes]
    if mode == "bk" and changes:  # the point of no return: not while BK's book is known to differ
        out_of_step = await _out_of_step(shim)
        if out_of_step and not force:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, RETIRE_OUT_OF_STEP.format(out_of_step))
        changes = [replace(c, forced=bool(out_of_step)) for c in changes]
    promoting = mode in ("bk-primary", "bk") and any(c.from_mode in _BANK_ANSWERS for c in changes)
    # retiring Bank from bk-primary: the point of no return is judged on the evidence since, as a promotion
    # is (a new build of BK, a real mismatch found after the promotion)
    retiring = mode == "bk" and any(c.from_mode == "bk-primary" for c in changes)
    if promoting or retiring:
        moved, own = [s.lstrip("/") for s in scopes], None
        if scopes == [DEFAULT]:
            moved = following_the_default(shim.registry, current, shim.config.gate.methods)
            moved += [scope.lstrip("/") for scope in along]
            own = {scope.lstrip("/") for scope in current if scope != DEFAULT and scope not in along}
        failed = await _gate_failures(shim, moved, own, wait=not force, since_promotion=retiring)
        if failed and not force:
            unmirrored = ""
            if any(c.from_mode == UNMIRRORED for c in changes):
                unmirrored = (
                    " (in bank mode BK is sent no write, so the evidence judged starts once it is mirrored"
                    " again: switch to shadow first)"
                )
            what = "BK may not become primary" if promoting else "Bank may not be retired"
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the gate fails, so {what}{unmirrored}: " + "; ".join(failed) + " (--force overrides)",
            )
        changes = [replace(c, forced=c.forced or bool(failed)) for c in changes]
    if not changes:
        return []
    # held on every live replica, then applied and recorded as one step (`shim.fleet`): the store never
    # holds a switch that did not happen
    unapplied = ""
    # retiring Bank unforced: checked again once the calls in flight are over (their mirrors may fail)
    check = (lambda: _still_in_step(shim)) if mode == "bk" and not force else None
    try:
        await shim.fleet.switch(changes, pause, check)
    except Unswitched as exc:
        # ABORTED: refused as things are now (calls in flight, another switch), try again; never UNAVAILABLE,
        # which a client reads as "the admin API could not be reached"
        raise Refused(grpc.StatusCode.ABORTED, f"not applied, nothing recorded: {exc}") from exc
    except Unapplied as exc:  # recorded, applied elsewhere, and here at the next look at the store
        unapplied = str(exc)
    if (mark := stretch_mark(changes, shim.config, shim.registry, shim.fleet.replica)) is not None:
        shim.store.marks.put([mark])  # writes to Bank alone from now on, on keys the shim may not see
    for change in changes:
        _log.warning(
            "mode changed",
            scope=change.scope,
            from_mode=change.from_mode,
            to_mode=change.to_mode,
            who=change.who,
            reason=change.reason,
            forced=change.forced,
        )
    if unapplied:  # not ABORTED: trying again would find the modes recorded, and change nothing
        raise Refused(grpc.StatusCode.INTERNAL, unapplied)
    return changes


def following_the_default(
    registry: DescriptorRegistry | None, modes: Mapping[str, str], required: Sequence[str]
) -> list[str]:
    """The methods a change of the default mode moves: each method of the descriptors without a mode of
    its own, then `[gate] methods` (and, the gate adds, each method with evidence that has no mode of its
    own, described or not). Without descriptors they are not known: none (the gate then judges every
    method with evidence, and `[gate] methods`)."""
    if registry is None:
        return []
    own = {scope.lstrip("/") for scope in modes if scope != DEFAULT}
    moved = [path.lstrip("/") for path in registry.methods if path.lstrip("/") not in own]
    return list(dict.fromkeys([*moved, *(m.lstrip("/") for m in required)]))


async def _gate_failures(
    shim: Switchable, methods: list[str], own: set[str] | None, wait: bool, since_promotion: bool
) -> list[str]:
    """The gate's failed criteria (`_promotion`), evidence so far stored first (`wait`: a forced switch,
    which the gate only marks as forced, waits for none); replicas in other modes."""
    assert shim.store is not None
    apart = await shim.fleet.apart(shim.modes.table()) if shim.fleet is not None else []
    failed = [f"fleet: replicas in other modes than this one's: {'; '.join(apart)}"] if apart else []
    stored = shim.evidence_stored if wait else None
    return failed + await gate_failures(shim.store, shim.config, methods, own, stored, since_promotion)


def _modes(shim: Switchable) -> pb.Modes:
    default, methods = _split(shim.modes.table())
    return pb.Modes(default_mode=default, methods=methods)


def _split(table: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The default mode, and each method's own ("pkg.Svc/Method": mode)."""
    return table.get(DEFAULT, ""), {
        scope.lstrip("/"): mode for scope, mode in table.items() if scope != DEFAULT
    }


async def _fleet_modes(shim: Switchable) -> pb.Modes:
    """This replica's modes, and each replica's view as the store holds it."""
    modes = _modes(shim)
    if shim.fleet is not None:
        for view, differs, silent in await shim.fleet.views():
            default, methods = _split(view.modes)
            modes.replicas.append(
                pb.ReplicaModes(
                    replica=view.replica,
                    default_mode=default,
                    methods=methods,
                    since=view.since,
                    heartbeat=view.heartbeat,
                    differs=differs,
                    silent=silent,
                )
            )
        modes.lease = shim.fleet.timing.lease
    return modes


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, shim: Switchable, token: str) -> None:
        self._shim = shim
        self._token = token.encode()

    async def _authorize(self, context: aio.ServicerContext[Any, Any]) -> None:
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        expected = b"Bearer " + self._token
        if not given:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "the admin API needs its token: authorization: Bearer TOKEN"
            )
        if not hmac.compare_digest(str(given).encode(), expected):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the admin token was wrong: it is not the token the shim was started with",
            )

    async def GetModes(self, request: pb.GetModesRequest, context: aio.ServicerContext[Any, Any]) -> pb.Modes:
        await self._authorize(context)
        try:
            modes = await _fleet_modes(self._shim)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the store cannot be read: {exc}")
        return modes

    async def SetMode(self, request: pb.SetModeRequest, context: aio.ServicerContext[Any, Any]) -> pb.Modes:
        await self._authorize(context)
        try:
            await set_mode(
                self._shim,
                request.mode,
                list(request.methods),
                request.reason,
                request.who,
                force=request.force,
                retire_bank=request.retire_bank,
                pause=request.pause,
            )
        except Refused as refused:
            await context.abort(refused.code, refused.message)
        return _modes(self._shim)

    async def ModeHistory(
        self, request: pb.ModeHistoryRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ModeHistoryResponse:
        await self._authorize(context)
        store = self._shim.store
        if store is None:
            return pb.ModeHistoryResponse()
        try:
            changes = await store.modes.history(request.limit if request.limit > 0 else 100)
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the store cannot be read: {exc}")
        return pb.ModeHistoryResponse(
            changes=[
                pb.ModeChange(
                    at=c.at,
                    who=c.who,
                    scope=c.scope.lstrip("/"),
                    from_mode=c.from_mode,
                    to_mode=c.to_mode,
                    reason=c.reason,
                    forced=c.forced,
                )
                for c in changes
            ]
        )


def _unset_or_empty(name: str) -> str:
    return "empty" if name in os.environ else "not set"


async def serve_admin(shim: Switchable, settings: AdminSettings) -> tuple[aio.Server, int]:
    """The admin API, on its own (loopback) address, behind its token: the server and its port;
    StartupError when the token is missing or the address taken."""
    token = os.environ.get(settings.token_env, "")
    if not token:
        raise StartupError(
            f"admin.listen is set but ${settings.token_env} is {_unset_or_empty(settings.token_env)}:"
            " the admin API needs a token"
        )
    if not token.strip():
        raise StartupError(f"${settings.token_env} is blank: the admin API needs a token no one can guess")
    listen = settings.listen or ADMIN_LISTEN
    # never shared (grpc would set SO_REUSEPORT): two shims on one admin address would each take some
    # of the `shim mode` calls, and one could promote the other's service
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AdminServicer_to_server(AdminServicer(shim, token), server)  # type: ignore[no-untyped-call]
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise StartupError(
            f"cannot serve the admin API on {listen}: address in use or not available"
            " (another shim there? set [admin] listen)"
        ) from exc
    await server.start()
    return server, port


def default_who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "unknown"
