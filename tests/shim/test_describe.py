"""`shim describe`: .proto files to the descriptor set the shim reads, with no other install."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from comparators import DescriptorRegistry
from tests.helpers import run_shim
from tests.services.custody import REGISTRY as CUSTODY

ROOT = Path(__file__).resolve().parents[2]
CUSTODY_PROTO = ROOT / "tests" / "services" / "custody" / "custody.proto"


def test_a_proto_file_becomes_the_descriptor_set_the_shim_reads(tmp_path: Path) -> None:
    out = tmp_path / "custody.binpb"
    done = run_shim("describe", CUSTODY_PROTO, "-o", out)
    assert done.returncode == 0, done.stderr
    registry = DescriptorRegistry.from_files([out])
    assert {
        path: (i.client_streaming, i.server_streaming, i.read_only) for path, i in registry.methods.items()
    } == {path: (i.client_streaming, i.server_streaming, i.read_only) for path, i in CUSTODY.methods.items()}
    lines = done.stdout.splitlines()
    assert lines[0] == f"wrote {out}: 1 service, 9 methods (4 reads)"
    assert lines[1].startswith(
        "  custody.v1.Custody: Deposit, Freeze, GetAccountByRef (read), GetBalance (read)"
    )


def test_imports_are_found_under_the_proto_path(tmp_path: Path) -> None:
    (tmp_path / "acme" / "v1").mkdir(parents=True)
    (tmp_path / "acme" / "v1" / "money.proto").write_text(
        'syntax = "proto3";\npackage acme.v1;\nmessage Money { string units = 1; }\n', encoding="utf-8"
    )
    (tmp_path / "acme" / "v1" / "wallet.proto").write_text(
        'syntax = "proto3";\npackage acme.v1;\nimport "acme/v1/money.proto";\n'
        'import "google/protobuf/timestamp.proto";\n'
        "message Get { string id = 1; }\n"
        "message Wallet { Money balance = 1; google.protobuf.Timestamp at = 2; }\n"
        "service Wallets {\n"
        "  rpc GetWallet(Get) returns (Wallet) { option idempotency_level = NO_SIDE_EFFECTS; }\n"
        "}\n",
        encoding="utf-8",
    )
    out = tmp_path / "wallet.binpb"
    done = run_shim("describe", "-I", tmp_path, tmp_path / "acme" / "v1" / "wallet.proto", "-o", out)
    assert done.returncode == 0, done.stderr
    registry = DescriptorRegistry.from_files([out])
    assert list(registry.methods) == ["/acme.v1.Wallets/GetWallet"]
    assert registry.methods["/acme.v1.Wallets/GetWallet"].read_only
    # without -I, the import by package path is not found: protoc says so, and nothing is written
    again = tmp_path / "again.binpb"
    failed = run_shim("describe", tmp_path / "acme" / "v1" / "wallet.proto", "-o", again)
    assert failed.returncode == 2
    assert "acme/v1/money.proto" in failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("shim: error: the .proto files did not compile")
    assert not again.exists()


def test_a_file_not_found_as_given_is_looked_up_under_each_proto_path(tmp_path: Path) -> None:
    """As protoc takes it: `-I protos wh/v1/warehouse.proto` is protos/wh/v1/warehouse.proto when there is
    no wh/v1/warehouse.proto in the working directory; one found under no -I root is named with the roots
    looked in. Before, the path was only taken relative to the working directory."""
    (tmp_path / "other").mkdir()
    (tmp_path / "protos" / "wh" / "v1").mkdir(parents=True)
    (tmp_path / "protos" / "wh" / "v1" / "warehouse.proto").write_text(
        'syntax = "proto3";\npackage wh.v1;\nmessage Bin { string id = 1; }\n'
        "service Warehouse {\n"
        "  rpc GetBin(Bin) returns (Bin) { option idempotency_level = NO_SIDE_EFFECTS; }\n"
        "}\n",
        encoding="utf-8",
    )
    out = tmp_path / "wh.binpb"
    done = run_shim(
        "describe", "-I", "other", "-I", "protos", "wh/v1/warehouse.proto", "-o", out, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert list(DescriptorRegistry.from_files([out]).methods) == ["/wh.v1.Warehouse/GetBin"]
    assert done.stdout.splitlines()[0] == f"wrote {out}: 1 service, 1 method (1 read)"
    missing = run_shim("describe", "-I", "protos", "wh/v1/absent.proto", "-o", out, cwd=tmp_path)
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        "shim: error: no .proto file at wh/v1/absent.proto, nor under the -I folder protos",
    )


def test_a_file_that_does_not_compile_writes_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.proto"
    broken.write_text('syntax = "proto3";\nmessage {\n', encoding="utf-8")
    out = tmp_path / "broken.binpb"
    out.write_bytes(b"the previous set")
    done = run_shim("describe", broken, "-o", out)
    assert done.returncode == 2
    assert "broken.proto:2" in done.stderr  # protoc's own message, with the line
    assert out.read_bytes() == b"the previous set"  # never half-written, nor replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.binpb", "broken.proto"]  # no temporary left
    missing = run_shim("describe", tmp_path / "absent.proto", "-o", out)
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"shim: error: no .proto file at {tmp_path / 'absent.proto'}",
    )


def test_an_output_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    done = run_shim("describe", CUSTODY_PROTO, "-o", tmp_path)
    assert (done.returncode, done.stderr.strip()) == (2, f"shim: error: cannot write {tmp_path}: a folder")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_a_new_set_gets_the_mode_of_any_new_file(tmp_path: Path, umask: int, mode: int) -> None:
    """0666 less the umask, as `protoc` or `cp` would write it, so that a shim running as another user
    (systemd's User=shim, a container's uid) reads it. Before, it was the temporary file's 0600."""
    out = tmp_path / "custody.binpb"
    old = os.umask(umask)  # the command inherits it
    try:
        done = run_shim("describe", CUSTODY_PROTO, "-o", out)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_a_set_written_again_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    """An earlier set's mode is kept, whatever the umask: `shim describe` run again (the .proto changed) must
    not leave the shim's user unable to read it. Before, a 0644 set became 0600."""
    out = tmp_path / "custody.binpb"
    out.write_bytes(b"the previous set")
    out.chmod(mode)
    old = os.umask(0o077)
    try:
        done = run_shim("describe", CUSTODY_PROTO, "-o", out)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() != b"the previous set"
    assert stat.S_IMODE(out.stat().st_mode) == mode
