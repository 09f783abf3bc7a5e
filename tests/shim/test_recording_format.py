"""The recording file (`shim.recording.format`): what is written is read back whole, and a file that is
not whole (cut short, changed, of a newer version, never ended) is one clear RecordingError."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import sample_ledger
from comparators import DescriptorRegistry
from shim.recording.format import (
    PARTIAL,
    Header,
    RecordedCall,
    Recording,
    RecordingError,
    RecordingWriter,
    fingerprint,
)

ROOT = Path(__file__).parents[2]
REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
OPEN = "/bank.v1.Ledger/OpenAccount"


def _header() -> Header:
    return Header(
        created_at=1700000000.5,
        methods={m: fingerprint(REGISTRY, m) for m in REGISTRY.methods},
        descriptors=REGISTRY.descriptor_set().SerializeToString(),
        mode="bank",
        origin="empty",
        redacted=("bank.v1.Account.owner_name",),
        redaction_key="0123456789abcdef",
        sampled=0.5,
        replica="host-1",
    )


def _call(seq: int, **more: object) -> RecordedCall:
    fields: dict[str, object] = {
        "seq": seq,
        "at": 1700000001.25 + seq,
        "method": OPEN,
        "is_write": True,
        "keys": ("A1", "owner"),
        "correlation_id": f"req-{seq}",
        "metadata": (("x-request-id", f"req-{seq}"), ("trace-bin", b"\x00\xff\x01")),
        "requests": (b"\x0a\x02A1", b""),
        "responses": (b"\x0a\x02A1\x12\x03Ann",),
        "code": 0,
        "details": "",
        "initial_metadata": (("server", "bank"),),
        "trailing_metadata": (("grpc-status-details-bin", b"\x08\x05"),),
        "latency": 0.003,
        **more,
    }
    return RecordedCall(**fields)  # type: ignore[arg-type]


def _write(path: Path, calls: list[RecordedCall], reason: str = "stopped", lost: int = 0) -> Path:
    writer = RecordingWriter(path, _header())
    for call in calls:
        assert writer.add(call)
    return writer.end(reason, lost=lost)


@pytest.mark.parametrize("name", ["calls.jsonl", "calls.jsonl.gz"])
def test_every_field_is_read_back_as_written(tmp_path: Path, name: str) -> None:
    calls = [
        _call(0),
        _call(
            1, unsampled=("B2",), note="request 1 not kept", answered_by="bk", code=5, details="no", lost=3
        ),
    ]
    path = _write(tmp_path / name, calls, reason="record.max_bytes reached", lost=3)
    if name.endswith(".gz"):
        assert gzip.decompress(path.read_bytes()).startswith(b'{"shim_recording":1')
    recording = Recording(path)
    assert recording.header == _header()
    ending = recording.check()
    assert (ending.calls, ending.reason, ending.whole, ending.lost) == (
        2,
        "record.max_bytes reached",
        True,
        3,
    )
    assert list(recording.calls()) == calls
    assert not path.with_name(path.name + PARTIAL).exists()


def test_optional_fields_are_left_out_when_empty(tmp_path: Path) -> None:
    path = _write(tmp_path / "calls.jsonl", [_call(0)])
    line = json.loads(path.read_bytes().splitlines()[1])
    assert not {"unsampled", "note", "answered_by"} & set(line)


def test_add_within_a_bound_writes_nothing_beyond_it(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "calls.jsonl", _header())
    bound = writer.bytes + 2_000
    added = 0
    while writer.add(_call(added), within=bound):
        added += 1
    assert added > 0
    path = writer.end("record.max_bytes reached")
    assert path.stat().st_size <= bound
    assert Recording(path).check().calls == added


def test_a_file_cut_at_any_byte_is_an_error_or_with_truncated_its_calls_before_the_cut(
    tmp_path: Path,
) -> None:
    whole = _write(tmp_path / "whole.jsonl", [_call(0), _call(1), _call(2)]).read_bytes()
    header_end = whole.index(b"\n") + 1
    call_ends = [i + 1 for i, byte in enumerate(whole) if byte == ord("\n")][1:-1]
    cut = tmp_path / "cut.jsonl"
    for offset in range(len(whole)):  # every cut short of the whole file
        cut.write_bytes(whole[:offset])
        with pytest.raises(RecordingError) as caught:
            Recording(cut).check()
        assert str(cut) in str(caught.value)
        if 0 < offset < header_end:  # it said "its first line is not JSON"
            assert "cut short inside its first line (its header)" in str(caught.value)
        if offset < header_end:
            continue  # no whole header: not readable at all
        ending = Recording(cut, truncated=True).check()
        before = sum(1 for end in call_ends if end <= offset)
        assert (ending.whole, ending.calls) == (False, before)
        assert [c.seq for c in Recording(cut, truncated=True).calls()] == list(range(ending.calls))


def test_a_compressed_file_cut_at_any_byte_is_an_error_or_with_truncated_its_calls_before_the_cut(
    tmp_path: Path,
) -> None:
    """A .gz cut short has no gzip trailer (its writer was killed): it reads as far as it decompresses."""
    whole = _write(tmp_path / "whole.jsonl.gz", [_call(0), _call(1), _call(2)]).read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    for offset in range(len(whole)):
        cut.write_bytes(whole[:offset])
        readable = zlib.decompressobj(wbits=31).decompress(whole[:offset])  # what the cut still holds
        lines = readable.count(b"\n")
        with pytest.raises(RecordingError) as caught:
            Recording(cut).check()
        assert str(cut) in str(caught.value)
        if lines == 0 and offset > 10:  # past gzip's own header: it said "empty: not a recording"
            assert "cut short inside its first line (its header)" in str(caught.value), offset
        if lines == 0:
            continue  # no whole header: not readable at all
        calls = min(lines - 1, 3)  # its end line may be whole, short of the gzip trailer
        assert f"truncated after {calls} calls" in str(caught.value)
        ending = Recording(cut, truncated=True).check()
        assert (ending.whole, ending.calls) == (lines == 5, calls)
        assert [c.seq for c in Recording(cut, truncated=True).calls()] == list(range(calls))


_WRITER = """
import sys, time
from pathlib import Path
from shim.recording.format import RecordingWriter
from tests.shim.test_recording_format import _call, _header

writer = RecordingWriter(Path(sys.argv[1]), _header())
for seq in range(5):
    writer.add(_call(seq))
writer.flush()  # as the recorder does whenever its queue is empty
print("flushed", flush=True)
time.sleep(600)
"""


def test_a_compressed_partial_left_by_a_killed_writer_is_read_with_truncated(tmp_path: Path) -> None:
    """A writer process killed (SIGKILL) after it flushed leaves NAME.jsonl.gz.partial, with no gzip
    trailer: read with truncated, every call it flushed; without, cut short, one clear error."""
    path = tmp_path / "calls.jsonl.gz"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "flushed\n"
        writer.kill()
        assert writer.wait() == -signal.SIGKILL
    partial = tmp_path / ("calls.jsonl.gz" + PARTIAL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [partial.name]
    with pytest.raises(RecordingError, match="truncated after 5 calls"):
        Recording(partial).check()
    recording = Recording(partial, truncated=True)
    assert recording.header == _header()
    ending = recording.check()
    assert (ending.whole, ending.calls) == (False, 5)
    assert list(recording.calls()) == [_call(seq) for seq in range(5)]


def test_a_changed_byte_in_a_call_line_fails_its_checksum(tmp_path: Path) -> None:
    path = _write(tmp_path / "calls.jsonl", [_call(0), _call(1)])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"req-1", b"req-7")
    path.write_bytes(b"".join(lines))
    with pytest.raises(RecordingError, match="checksum"):
        Recording(path).check()


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("at", "NaN", "at is nan"),
        ("at", "-Infinity", "at is -inf"),
        ("latency", "Infinity", "latency is inf"),
        ("latency", "-0.5", "latency is -0.5"),
        ("request_times", "[0.0, NaN]", "request_times holds nan"),
        ("request_times", "[0.0, -1.0]", "request_times holds -1.0"),
        ("at", "1e308", "at is 1e+308, not seconds since the epoch before the year 10000"),
        ("at", "-5.0", "at is -5.0"),
        ("latency", "1e300", "latency is 1e+300"),
        ("request_times", "[0.0, 1e20]", "request_times holds 1e+20"),
    ],
)
def test_a_time_that_is_not_a_finite_number_of_seconds_is_one_clear_error(
    tmp_path: Path, field: str, value: str, said: str
) -> None:
    """A call's times (when it came, how long Bank took, when a session's messages came) are finite, and
    the durations not negative, none past the year 10000; JSON as Python reads it allows NaN and Infinity
    (and 1e308, with which a replay stored the call as an `error`, its checks passed). Such a call, under a
    checksum that holds (a file another tool wrote), is refused naming its line and field, whole or read
    with truncated: its times would pace the replay and move Bank's times on."""
    session = _call(1, request_times=(0.0, 0.5))
    path = _write(tmp_path / "calls.jsonl", [_call(0), session])
    lines = path.read_bytes().splitlines(keepends=True)
    doc = json.loads(lines[2])
    doc[field] = "SPOILT"
    lines[2] = json.dumps(doc).replace('"SPOILT"', value).encode() + b"\n"
    end = json.loads(lines[-1])
    end["end"]["sha256"] = hashlib.sha256(b"".join(lines[1:-1])).hexdigest()  # another tool's, whole
    path.write_bytes(b"".join([*lines[:-1], json.dumps(end).encode() + b"\n"]))
    for truncated in (False, True):
        with pytest.raises(RecordingError, match=rf"line 3: a malformed call .*{re.escape(said)}"):
            Recording(path, truncated=truncated).check()


def test_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "calls.jsonl", [_call(0)])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"shim_recording":1', b'"shim_recording":2')
    path.write_bytes(b"".join(lines))
    with pytest.raises(RecordingError, match="version 2"):
        Recording(path)


def _with_line(path: Path, index: int, line: object) -> Path:
    """The recording at `path` with its line `index` (0: the header, -1: the end line) replaced."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[index] = json.dumps(line).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("lost", "many", 'its lost is "many", not a count (a whole number, 0 or more)'),
        ("lost", None, "its lost is null, not a count"),
        ("lost", -3, "its lost is -3, not a count"),
        ("lost", True, "its lost is true, not a count"),
        ("lost", 1.5, "its lost is 1.5, not a count"),
        ("calls", "2", 'its calls is "2", not a count'),
        ("reason", 5, "its reason is 5, not text"),
        ("sha256", None, "its sha256 is null, not text"),
    ],
)
def test_a_malformed_end_line_is_one_clear_error(
    tmp_path: Path, field: str, value: object, says: str
) -> None:
    """The end line is not under the checksum: each of its fields is checked for what it must be."""
    path = _write(tmp_path / "calls.jsonl", [_call(0), _call(1)], lost=2)
    end = json.loads(path.read_bytes().splitlines()[-1])
    _with_line(path, -1, {"end": {**end["end"], field: value}})
    with pytest.raises(RecordingError) as caught:
        Recording(path).check()
    assert str(caught.value).startswith(f"{path}: line 4: the end line is malformed: {says}")
    _with_line(path, -1, {"end": [1, 2]})
    with pytest.raises(RecordingError, match="line 4: the end line is malformed: not an object"):
        Recording(path).check()


@pytest.mark.parametrize("version", ["1", True, 0, -1, 1.0, None])
def test_a_version_that_is_not_a_whole_number_from_1_is_refused_as_such(
    tmp_path: Path, version: object
) -> None:
    path = _write(tmp_path / "calls.jsonl", [_call(0)])
    header = json.loads(path.read_bytes().splitlines()[0])
    _with_line(path, 0, {**header, "shim_recording": version})
    with pytest.raises(RecordingError) as caught:
        Recording(path)
    shown = json.dumps(version)
    assert str(caught.value) == (
        f"{path}: line 1: not a recording this shim reads: its version (shim_recording) is {shown},"
        " not a whole number from 1"
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("methods", ["x"], 'its methods is ["x"], not an object of texts'),
        ("methods", {"/a.B/C": 5}, 'its methods is {"/a.B/C": 5}, not an object of texts'),
        (
            "redacted",
            "bank.v1.Account.owner_name",
            'its redacted is "bank.v1.Account.owner_name", not a list of texts',
        ),
        ("answered_by", None, "its answered_by is null, not text"),
        ("created_at", "now", 'its created_at is "now", not a number'),
        ("sampled", True, "its sampled is true, not a number"),
    ],
)
def test_a_header_field_of_the_wrong_type_is_one_clear_error(
    tmp_path: Path, field: str, value: object, says: str
) -> None:
    path = _write(tmp_path / "calls.jsonl", [_call(0)])
    header = json.loads(path.read_bytes().splitlines()[0])
    _with_line(path, 0, {**header, field: value})
    with pytest.raises(RecordingError) as caught:
        Recording(path)
    assert str(caught.value).startswith(f"{path}: line 1: the header is malformed: {says}")


def test_only_a_partial_file_is_an_error(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "calls.jsonl", _header())
    writer.add(_call(0))
    writer.abandon()
    with pytest.raises(RecordingError, match=r"not ended: only calls\.jsonl\.partial"):
        Recording(tmp_path / "calls.jsonl")
    partial = Recording(tmp_path / ("calls.jsonl" + PARTIAL), truncated=True)
    assert partial.check().calls == 1


def test_the_fingerprint_changes_with_a_field_of_the_request(tmp_path: Path) -> None:
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(REGISTRY.descriptor_set().SerializeToString())
    for proto in files.file:
        for message in proto.message_type:
            if message.name == "OpenAccountRequest":
                message.field[1].name = "owner"
    other = DescriptorRegistry()
    other.add_set(files)
    assert fingerprint(REGISTRY, OPEN)
    assert fingerprint(other, OPEN) != fingerprint(REGISTRY, OPEN)
    assert fingerprint(other, "/bank.v1.Ledger/GetBalance") == fingerprint(
        REGISTRY, "/bank.v1.Ledger/GetBalance"
    )


@pytest.mark.parametrize("name", ["shim.db", "shim.toml", "diffs.jsonl", "diffs.jsonl.gz", "a-directory"])
def test_a_record_path_holding_anything_but_a_recording_is_refused_and_left_as_it_is(
    tmp_path: Path, name: str
) -> None:
    """Only an earlier recording is set aside: a store, a config, a diff log (plain or compressed) or a
    directory at the path was renamed away (a store in use, and the evidence written to it since, lost).
    It is an error naming the path, and the file stays."""
    path = tmp_path / name
    if name == "a-directory":
        path.mkdir()
        (path / "inside").write_text("x")
    elif name.endswith(".gz"):
        with gzip.open(path, "wb") as out:
            out.write(b'{"at": 1, "method": "/bank.v1.Ledger/Deposit"}\n')
    else:
        path.write_bytes(b"SQLite format 3\x00" if name.endswith(".db") else b'[store]\nurl = "shim.db"\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RecordingError, match="not a shim recording"):
        RecordingWriter(path, _header())
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_empty_file_or_a_compressed_recording_cut_before_its_first_line_is_set_aside(
    tmp_path: Path,
) -> None:
    """What a shim killed as it began leaves: nothing, or a gzip stream that ends before a line."""
    empty, cut = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    empty.write_bytes(b"")
    cut.write_bytes(gzip.compress(b'{"shim_recording": 1, "created_at": 1}\n')[:12])
    for path in (empty, cut):
        writer = RecordingWriter(path, _header())
        writer.end()
        assert len(writer.kept) == 1
        assert Recording(path).check().calls == 0


@pytest.mark.parametrize("name", ["traffic.jsonl", "traffic.jsonl.gz"])
def test_a_recording_is_never_written_over_an_earlier_one_whole_or_cut_short(
    tmp_path: Path, name: str
) -> None:
    """A second recording at the same path keeps the first (whole) and one cut short (a `.partial` its
    killed shim left) under names of their own, each still readable as it was."""
    path = tmp_path / name
    _write(path, [_call(0), _call(1)])
    cut = RecordingWriter(path, _header())  # the first is kept, not written over
    cut.add(_call(0))
    cut.abandon()  # a shim killed while recording: only NAME.partial
    writer = RecordingWriter(path, _header())
    writer.add(_call(0))
    writer.add(_call(1))
    writer.add(_call(2))
    writer.end()
    assert Recording(path).check().calls == 3
    whole = [p for p in tmp_path.iterdir() if p != path and not p.name.endswith(PARTIAL)]
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(PARTIAL)]
    assert (len(whole), len(partial)) == (1, 1), sorted(p.name for p in tmp_path.iterdir())
    assert whole[0].name.startswith("traffic-")
    assert whole[0].name.endswith(name.partition(".")[2])
    assert Recording(whole[0]).check().calls == 2
    assert [c.seq for c in Recording(partial[0], truncated=True).calls()] == [0]
    assert partial[0] in writer.kept
    assert whole[0] in cut.kept
