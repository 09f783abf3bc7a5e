"""Reading the files a config names (the config, rules, certificates, descriptor sets): regular files only,
bounded.

A device such as /dev/urandom never ends and a named pipe waits for a writer: either would
hang the start or grow without bound. Both are refused, as is a file larger than `limit`, with
an OSError whose strerror says why (the callers already turn OSError into one line naming the
setting).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_MAX_FILE = 64 * 1024**2  # bytes: far above any config, rules file or certificate chain; a descriptor set
# of thousands of files takes a few MiB


def read_regular(path: str | Path, limit: int = _MAX_FILE) -> bytes:
    """The bytes of the regular file at `path`; OSError for anything else or anything larger."""
    _check(os.stat(path).st_mode)
    # O_NONBLOCK: a file swapped for a pipe since the check is opened without waiting for a writer
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as file:
        _check(os.fstat(fd).st_mode)
        data = file.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // 1024**2} MiB")
    return data


def _check(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file (a device, a named pipe or a socket)")
