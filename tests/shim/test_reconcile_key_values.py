"""`shim reconcile` with keys a state read's key field cannot take: each is reported unreadable, and the
sweep goes on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from google.protobuf import descriptor_pb2

from comparators import DescriptorRegistry
from comparators.message_api import parse, serialize
from tests.backends import scripted_server
from tests.helpers import shim_command

F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    """ik.v1.Svc/Get(GetReq) -> GetResp, the key an int64 `id`."""
    file = descriptor_pb2.FileDescriptorProto(name="ik.proto", package="ik.v1", syntax="proto3")
    request = file.message_type.add(name="GetReq")
    request.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    answer = file.message_type.add(name="GetResp")
    answer.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    answer.field.add(name="value", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    file.service.add(name="Svc").method.add(
        name="Get", input_type=".ik.v1.GetReq", output_type=".ik.v1.GetResp"
    )
    return file


FILE = _file()
REGISTRY = DescriptorRegistry()
REGISTRY.add_set(descriptor_pb2.FileDescriptorSet(file=[FILE]))


async def _get(requests: AsyncIterator[bytes], context: object) -> list[bytes]:
    request = REGISTRY.message_class("ik.v1.GetReq")()
    parse(request, await anext(requests))
    return [serialize(REGISTRY.message_class("ik.v1.GetResp")(id=request.id, value="v"))]


async def test_a_key_an_integer_field_cannot_take_is_unreadable_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """A keys file naming 12, "acc-7" (no integer) and 2**64 (past int64) for a read whose key is an int64:
    12 is read and agrees; the two others are reported unreadable, each saying why (exit 1). Before, the
    first such key ended the sweep with a traceback."""
    (tmp_path / "ik.binpb").write_bytes(descriptor_pb2.FileDescriptorSet(file=[FILE]).SerializeToString())
    bank, bk = await scripted_server(_get), await scripted_server(_get)  # type: ignore[arg-type]
    try:
        (tmp_path / "shim.toml").write_text(
            'descriptor_sets = ["ik.binpb"]\n'
            f'[upstreams.bank]\ntarget = "{bank.address}"\n'
            f'[upstreams.bk]\ntarget = "{bk.address}"\n'
            '[reconcile]\nkeys = "store"\nreads = [{ method = "ik.v1.Svc/Get", key = "id" }]\n',
            encoding="utf-8",
        )
        (tmp_path / "keys.txt").write_text(f"12\nacc-7\n{2**64}\n", encoding="utf-8")
        code, out, err = await shim_command(
            "reconcile", "--config", tmp_path / "shim.toml", "--store", ":memory:",
            "--keys-file", tmp_path / "keys.txt", "--json",
        )  # fmt: skip
    finally:
        await bank.stop()
        await bk.stop()
    assert code == 1, (out, err)
    result = json.loads(out)
    assert (result["keys"], result["differing"]) == (3, [])
    invalid = "ik.v1.Svc/Get: {!r} is not a valid value for field id ({})"
    assert [(r["key"], r["reason"]) for r in result["unreadable"]] == [
        (str(2**64), invalid.format(str(2**64), "out of range for int64")),
        ("acc-7", invalid.format("acc-7", "not an integer")),
    ]
