"""`shim describe`: a descriptor set from `.proto` files, with no other install.

    shim describe protos/svc/v1/svc.proto -o svc.binpb            # -I: each file's folder
    shim describe -I protos svc/v1/a.proto svc/v1/b.proto -o svc.binpb   # as protoc: under -I

A file not found as given (relative to the working directory) is looked up
under each -I folder in turn, as protoc looks its inputs up. The files are
compiled by protoc as `grpcio-tools` ships it (its well-known
types included), with `--include_imports`, into a FileDescriptorSet the shim
takes with `--descriptor-set` or `descriptor_sets`. The set is checked the way
the shim reads it, and written whole or not at all (a temporary file, renamed).
It then prints what it describes: each service's methods, with the reads
(`idempotency_level = NO_SIDE_EFFECTS`) marked. Exit status 0, or 2 with
protoc's own messages when the files do not compile.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from shim.errors import ShimError
from shim.terminal_text import printable


def add_parser(commands: Any) -> None:  # the `shim` parser's sub-commands
    describe = commands.add_parser(
        "describe", help="compile .proto files into the descriptor set the shim reads (no other install)"
    )
    describe.add_argument(
        "protos",
        metavar="PROTO",
        nargs="+",
        help="the .proto files of the service: as given, else under an -I folder (as protoc)",
    )
    describe.add_argument(
        "-o", "--out", metavar="FILE", required=True, help="the descriptor set to write (e.g. svc.binpb)"
    )
    describe.add_argument(
        "-I",
        "--proto-path",
        metavar="DIR",
        action="append",
        default=None,
        help="where imports, and PROTO files not found as given, are found, as protoc's -I; repeatable"
        " (default: each file's folder)",
    )


def _mode_for(out: Path) -> int:
    """The mode the descriptor set is written with: an earlier set's, else what any new file gets (0666
    less the umask), so that a shim running as another user reads it as before; never the 0600 of the
    temporary file it is written to first."""
    try:
        return stat.S_IMODE(out.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)  # read by setting it: restored at once (the command runs no other thread)
        os.umask(umask)
        return 0o666 & ~umask


def _found(proto: Path, roots: list[str]) -> Path:
    """The file `proto` names: as given (relative to the working directory), else, as protoc looks an input
    up, under the first -I folder that has it."""
    if proto.is_file():
        return proto
    if proto.is_absolute() or not roots:
        raise ShimError(f"no .proto file at {proto}")
    for root in roots:
        if (Path(root) / proto).is_file():
            return Path(root) / proto
    folders = f"folder{'s' if len(roots) > 1 else ''} {', '.join(roots)}"
    raise ShimError(f"no .proto file at {proto}, nor under the -I {folders}")


def describe(args: argparse.Namespace) -> int:
    from grpc_tools import protoc

    from comparators import DescriptorError, DescriptorRegistry

    protos = [_found(Path(p), args.proto_path or []) for p in args.protos]
    roots = args.proto_path or list(dict.fromkeys(str(p.parent) for p in protos))
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        raise ShimError(f"cannot write {out}: {'a folder' if out.is_dir() else f'no folder {out.parent}'}")
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(handle)
    try:
        argv = [
            "protoc",
            *(f"-I{root}" for root in roots),
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={temporary}",
            *(str(p) for p in protos),
        ]
        if protoc.main(argv) != 0:  # protoc printed why, on stderr
            raise ShimError(
                f"the .proto files did not compile (protoc's messages above); nothing written to {out}"
            )
        try:
            registry = DescriptorRegistry.from_files([temporary])
        except DescriptorError as exc:
            raise ShimError(f"{exc}; nothing written to {out}") from exc
        try:
            os.chmod(temporary, _mode_for(out))
            os.replace(temporary, out)
        except OSError as exc:
            raise ShimError(f"cannot write {out}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    methods = registry.methods
    services: dict[str, list[str]] = {}
    for path, info in sorted(methods.items()):
        service, _, name = path.lstrip("/").partition("/")
        services.setdefault(service, []).append(f"{name}{' (read)' if info.read_only else ''}")
    reads = sum(1 for info in methods.values() if info.read_only)
    counted = f"{_count(len(services), 'service')}, {_count(len(methods), 'method')}"
    print(f"wrote {out}: {counted} ({_count(reads, 'read')})")
    for service, names in services.items():
        print(f"  {printable(service)}: {printable(', '.join(names))}")
    if not methods:
        print("  no service: the files declare messages only", file=sys.stderr)
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


__all__ = ["add_parser", "describe"]
