"""The recording file: calls as the primary answered them, in a form that moves between machines.

Over 400 lines: the format is written and read here, with what guards a path (an earlier recording set
aside, anything else refused), so that the two sides of it never drift apart.

Version 1 is JSON Lines, UTF-8 (`docs/recording-format.md` documents it for other tools):

    {"shim_recording": 1, ...header...}                   the first line: what was recorded, and from what
    {"seq": 0, "at": ..., "method": "/pkg.Svc/M", ...}   one line per call, in the order the calls arrived
    ...
    {"end": {"calls": N, "reason": "...", "lost": 0, "sha256": "..."}}  the last line: how many, why it ended

Messages and binary metadata values are base64. `sha256` is over every call line as written (its bytes,
newline included), so a file cut short (no end line), a line changed or one lost is found before anything
is replayed. A name ending in `.gz` is gzip-compressed. The writer writes `NAME.partial` and renames it
only once the end line is written: a file under the name asked for is whole.

One call's line is `shim.recording.call`.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import stat
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shim.errors import ShimError
from shim.recording.call import Metadata as Metadata
from shim.recording.call import RecordedCall as RecordedCall
from shim.recording.call import call_line as call_line
from shim.recording.identity import fingerprint as fingerprint  # where replay checks it

VERSION = 1
MAGIC = "shim_recording"
PARTIAL = ".partial"
END_LINE_BYTES = 256  # room kept for the end line by `RecordingWriter.add(within=...)`


class RecordingError(ShimError):
    """A recording cannot be read or written whole; str(error) names the file and what is wrong."""


class _Malformed(ValueError):
    """A field of the header or the end line is not of its type: "its lost is "many", not a count"."""


_REQUIRED = object()
# what a field must be: (as an error says it, whether a value is one)
_TEXT = ("text", lambda v: isinstance(v, str))
_NUMBER = ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
_COUNT = ("a count (a whole number, 0 or more)", lambda v: type(v) is int and v >= 0)
_TEXTS = ("a list of texts", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
_TEXT_MAP = (
    "an object of texts",
    lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
)


def _typed(doc: dict[str, Any], name: str, kind: tuple[str, Any], default: Any = _REQUIRED) -> Any:
    """`doc[name]`, if it is of `kind` (else _Malformed); `default` when it is not there (else KeyError)."""
    if name not in doc:
        if default is _REQUIRED:
            raise _Malformed(f"it has no {name}")
        return default
    value = doc[name]
    what, fits = kind
    if not fits(value):
        raise _Malformed(f"its {name} is {_shown(value)}, not {what}")
    return value


def _shown(value: Any) -> str:
    """A value as the file has it (JSON), cut to a length an error line can hold."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class Header:
    """What a recording holds, and where it comes from."""

    created_at: float  # seconds since the epoch
    # the methods of the descriptors it was recorded with ("/pkg.Svc/Method"), each with the fingerprint of
    # its request and answer types (`fingerprint`): a replay with other descriptors is refused
    methods: dict[str, str]
    descriptors: bytes = b""  # the FileDescriptorSet it was recorded with (empty: none were known)
    mode: str = ""  # the mode the shim served in ("bank", "shadow", ...)
    answered_by: str = "bank"  # the side whose answers it holds
    origin: str = "running"  # "empty": the primary's state was empty when recording began
    redacted: tuple[str, ...] = ()  # the fields replaced by hashes before they were written
    redaction_key: str = ""  # which redaction key hashed them (an id, never the key)
    sampled: float = 1.0  # the share of keys whose calls were recorded (whole histories)
    replica: str = ""  # the shim that recorded it
    extra: dict[str, Any] = field(default_factory=dict)  # fields of a newer writer, kept as they are

    def as_json(self) -> dict[str, Any]:
        return {
            MAGIC: VERSION,
            "created_at": self.created_at,
            "methods": dict(self.methods),
            "descriptors": base64.b64encode(self.descriptors).decode(),
            "mode": self.mode,
            "answered_by": self.answered_by,
            "origin": self.origin,
            "redacted": list(self.redacted),
            "redaction_key": self.redaction_key,
            "sampled": self.sampled,
            "replica": self.replica,
            **self.extra,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Header:
        known = {MAGIC, "created_at", "methods", "descriptors", "mode", "answered_by", "origin", "redacted"}
        known |= {"redaction_key", "sampled", "replica"}
        return cls(
            created_at=float(_typed(doc, "created_at", _NUMBER)),
            methods=dict(_typed(doc, "methods", _TEXT_MAP)),
            descriptors=base64.b64decode(_typed(doc, "descriptors", _TEXT, ""), validate=True),
            mode=_typed(doc, "mode", _TEXT, ""),
            answered_by=_typed(doc, "answered_by", _TEXT, "bank"),
            origin=_typed(doc, "origin", _TEXT, "running"),
            redacted=tuple(_typed(doc, "redacted", _TEXTS, [])),
            redaction_key=_typed(doc, "redaction_key", _TEXT, ""),
            sampled=float(_typed(doc, "sampled", _NUMBER, 1.0)),
            replica=_typed(doc, "replica", _TEXT, ""),
            extra={k: v for k, v in doc.items() if k not in known},
        )


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.name.removesuffix(PARTIAL).endswith(".gz"):
        return gzip.open(path, mode + "b")  # type: ignore[return-value]
    return open(path, mode + "b")  # closed by the caller


def set_aside(path: Path) -> Path | None:
    """Rename the file at `path`, if there is one, after the time it was last written
    (`traffic.jsonl.gz` -> `traffic-20261204T193000Z.jsonl.gz`, its `.partial` kept); its new path.
    Only a recording (or an empty file) is set aside: anything else there is an error, never moved."""
    try:
        written = path.stat().st_mtime
    except FileNotFoundError:
        return None
    if not _a_recording(path):
        raise RecordingError(
            f"{path}: the path holds something that is not a shim recording (a recording is never written"
            " over, and only an earlier recording is set aside): give the recording a path of its own"
        )
    stem, dot, rest = path.name.partition(".")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(written))
    for n in range(1000):
        name = f"{stem}-{stamp}{f'-{n}' if n else ''}{dot}{rest}"
        target = path.with_name(name)
        if not target.exists():
            os.replace(path, target)
            return target
    raise OSError(f"no free name to keep {path} under")


def _a_recording(path: Path) -> bool:
    """Whether the file at `path` is a regular file that is empty or begins as a recording does (plain, or
    gzip-compressed: one cut short before its first line was written through counts too)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with open(path, "rb") as raw:
            head = raw.read(64)
        if head.startswith(b"\x1f\x8b"):
            with gzip.open(path, "rb") as unpacked:
                head = unpacked.read(64)
    except (EOFError, gzip.BadGzipFile):  # compressed, cut short: a recording killed early
        return True
    except OSError:
        return False
    return not head or (head.startswith(b"{") and f'"{MAGIC}"'.encode() in head)


class RecordingWriter:
    """Writes a recording to `NAME.partial`, and renames it `NAME` once ended (`end`)."""

    def __init__(self, path: Path, header: Header, *, exclusive: bool = False) -> None:
        """With `exclusive`, a file at `path` (or its `.partial`) is an error, not set aside, and `end`
        never replaces one that appeared since."""
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + PARTIAL)
        self._exclusive = exclusive
        self.kept: list[Path] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                for there in (self.path, self._partial):
                    if there.exists():
                        raise RecordingError(f"{there}: the file exists: a recording is never written over")
            else:  # a recording is never written over: one of an earlier run, whole or cut short (its shim
                # was killed), is kept under a name of its own
                self.kept = [kept for kept in map(set_aside, (self.path, self._partial)) if kept is not None]
            self._out = _open(self._partial, "x" if exclusive else "w")
        except FileExistsError as exc:  # of the partial file (opened "x"), or of a parent directory
            if exc.filename is None or Path(exc.filename) != self._partial:
                raise RecordingError(f"{self.path}: cannot write the recording: {exc.strerror}") from None
            raise RecordingError(
                f"{self._partial}: the file exists: a recording is never written over"
            ) from None
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write the recording: {exc.strerror or exc}") from None
        self._hash = hashlib.sha256()
        self.calls = 0
        self.lost = 0  # calls added that it could not keep: none (a write that fails ends the recording)
        self.bytes = 0
        self._write(json.dumps(header.as_json(), separators=(",", ":")).encode() + b"\n")

    def _write(self, line: bytes) -> None:
        try:
            self._out.write(line)
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write the recording: {exc.strerror or exc}") from None
        self.bytes += len(line)

    def add(self, call: RecordedCall, within: int | None = None) -> bool:
        """Write a call; with `within`, only if the file stays within that many bytes (before compression)
        with its end line: False, and nothing written, when it would not."""
        line = call_line(call)
        if within is not None and self.bytes + len(line) + END_LINE_BYTES > within:
            return False
        self._hash.update(line)
        self._write(line)
        self.calls += 1
        return True

    def flush(self) -> None:
        """What was added so far, handed to the operating system (it outlives the shim's process)."""
        try:
            self._out.flush()
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write the recording: {exc.strerror or exc}") from None

    def end(self, reason: str = "stopped", lost: int = 0) -> Path:
        """Write the end line, and give the file its name: the recording is whole. `lost`: calls the
        recorder could not keep (it was behind); a replay cannot know the state of any key after the first."""
        end = {"end": {"calls": self.calls, "reason": reason, "lost": lost, "sha256": self._hash.hexdigest()}}
        self._write(json.dumps(end, separators=(",", ":")).encode() + b"\n")
        try:
            self._out.close()
            if self._exclusive:  # a file that appeared at `path` meanwhile is not replaced
                os.link(self._partial, self.path)
                os.unlink(self._partial)
            else:
                os.replace(self._partial, self.path)
        except FileExistsError:
            raise RecordingError(f"{self.path}: the file exists: a recording is never written over") from None
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write the recording: {exc.strerror or exc}") from None
        return self.path

    def abandon(self) -> None:
        """Leave the partial file as it is (what was written can still be read with `truncated=True`)."""
        with contextlib.suppress(OSError):
            self._out.close()


@dataclass(frozen=True, slots=True)
class Ending:
    """How a recording ended: its end line, or where it was cut short."""

    calls: int
    reason: str
    whole: bool  # False: no end line (the shim that wrote it stopped first)
    lost: int = 0  # calls the recorder could not keep
    methods: frozenset[str] = frozenset()  # the methods of its calls


class Recording:
    """A recording file, read. `check()` reads it once through (a corrupt or truncated file is one
    RecordingError, before anything is done with it); `calls()` then gives its calls, one at a time. With
    `truncated`, a path with only its `.partial` there (its writer stopped first) reads the `.partial`."""

    def __init__(self, path: Path, *, truncated: bool = False) -> None:
        self.path = Path(path)
        self._truncated = truncated  # accept a file with no end line: its calls up to where it stops
        self._cut = False  # a compressed file that ends before its gzip trailer
        partial = self.path.with_name(self.path.name + PARTIAL)
        if not self.path.exists() and partial.exists():
            if not truncated:
                raise RecordingError(
                    f"{self.path}: not ended: only {partial.name} is there (read it with --truncated)"
                )
            self.path = partial  # what its writer left when it stopped before ending it
        with self._lines() as lines:
            first = next(lines, None)
            if (first is None and self._cut) or (first is not None and not first[1].endswith(b"\n")):
                raise RecordingError(
                    f"{self.path}: cut short inside its first line (its header): nothing to read"
                )
            if first is None:
                raise RecordingError(f"{self.path}: empty: not a recording")
            self.header = self._header(first[1])

    @contextlib.contextmanager
    def _lines(self) -> Iterator[Iterator[tuple[int, bytes]]]:
        try:
            source = _open(self.path, "r")
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot read the recording: {exc.strerror or exc}") from None
        with source:

            def numbered() -> Iterator[tuple[int, bytes]]:
                try:
                    yield from enumerate(source, start=1)
                except EOFError:  # compressed, and cut short (its writer killed before the gzip trailer):
                    self._cut = True  # it ends at its last whole line (read it with truncated)
                except (OSError, gzip.BadGzipFile, zlib.error) as exc:
                    raise RecordingError(f"{self.path}: cannot read the recording: {exc}") from None

            yield numbered()

    def _header(self, line: bytes) -> Header:
        try:
            doc = json.loads(line)
        except ValueError:
            raise RecordingError(f"{self.path}: not a recording (its first line is not JSON)") from None
        if not isinstance(doc, dict) or MAGIC not in doc:
            raise RecordingError(f"{self.path}: not a recording (no {MAGIC!r} in its first line)")
        version = doc[MAGIC]
        if type(version) is not int or version < 1:
            raise RecordingError(
                f"{self.path}: line 1: not a recording this shim reads: its version ({MAGIC}) is"
                f" {_shown(version)}, not a whole number from 1"
            )
        if version > VERSION:
            raise RecordingError(
                f"{self.path}: a recording of version {version}; this shim reads up to version {VERSION}"
            )
        try:
            return Header.from_json(doc)
        except _Malformed as exc:
            raise RecordingError(f"{self.path}: line 1: the header is malformed: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"{self.path}: line 1: the header is malformed ({exc!r})") from None

    def check(self) -> Ending:
        """Read the file once through: its calls well formed, in order, and as many as its end line says,
        with the checksum it gives. A RecordingError names the first line that is wrong."""
        digest = hashlib.sha256()
        calls, ended, end_number, lost = 0, None, 0, 0
        methods: set[str] = set()
        with self._lines() as lines:
            next(lines)
            for number, line in lines:
                if ended is not None:
                    raise RecordingError(f"{self.path}: line {number}: more lines after the end line")
                if not line.endswith(b"\n"):
                    break  # the last line, cut short: no end line
                doc = self._parse(number, line)
                if "end" in doc:
                    ended, end_number = doc["end"], number
                    continue
                call = self._call(number, doc, expected=calls)
                methods.add(call.method)
                lost = max(lost, call.lost)  # written as it grew: the last call's, in a file the shim wrote
                digest.update(line)
                calls += 1
        if ended is None or (self._cut and not self._truncated):
            if self._truncated:
                # what the recorder had lost by its last call (the calls say, with no end line to)
                return Ending(
                    calls, "cut short: no end line", whole=False, lost=lost, methods=frozenset(methods)
                )
            cut = "no end line" if ended is None else "it ends before its gzip trailer"
            raise RecordingError(
                f"{self.path}: truncated after {calls} calls ({cut}: the shim recording it stopped first,"
                " or the file was cut short)"
            )
        end = self._end(end_number, ended)
        if end["calls"] != calls:
            raise RecordingError(
                f"{self.path}: {calls} calls, but its end line says {end['calls']}: calls are missing"
            )
        if end["sha256"] != digest.hexdigest():
            raise RecordingError(f"{self.path}: corrupt: its calls do not match their checksum (sha256)")
        return Ending(calls, end["reason"], whole=True, lost=end["lost"], methods=frozenset(methods))

    def _end(self, number: int, ended: object) -> dict[str, Any]:
        """The end line's fields, each of its type (it is not under the checksum)."""
        where = f"{self.path}: line {number}: the end line is malformed"
        if not isinstance(ended, dict):
            raise RecordingError(f"{where}: not an object")
        try:
            return {
                "calls": _typed(ended, "calls", _COUNT),
                "reason": _typed(ended, "reason", _TEXT, ""),
                "lost": _typed(ended, "lost", _COUNT, 0),
                "sha256": _typed(ended, "sha256", _TEXT),
            }
        except _Malformed as exc:
            raise RecordingError(f"{where}: {exc}") from None

    def _parse(self, number: int, line: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(line)
        except ValueError:
            raise RecordingError(f"{self.path}: line {number}: corrupt (not JSON)") from None
        if not isinstance(doc, dict):
            raise RecordingError(f"{self.path}: line {number}: corrupt (not a call)")
        return doc

    def _call(self, number: int, doc: dict[str, Any], expected: int | None = None) -> RecordedCall:
        try:
            call = RecordedCall.from_json(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"{self.path}: line {number}: a malformed call ({exc!r})") from None
        if expected is not None and call.seq != expected:
            raise RecordingError(f"{self.path}: line {number}: call {call.seq} where call {expected} was due")
        return call

    def calls(self) -> Iterator[RecordedCall]:
        """The calls, in the order they arrived (read lazily: memory does not grow with the file)."""
        with self._lines() as lines:
            next(lines)
            for number, line in lines:
                if not line.endswith(b"\n"):
                    return  # cut short (accepted by `check` only with truncated)
                doc = self._parse(number, line)
                if "end" in doc:
                    return
                yield self._call(number, doc)
