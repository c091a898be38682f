"""Atomic file writes: a temporary file in the same folder, flushed, then renamed.

The temporary file of a target `name` is `.{name}.tmp-{pid}-{random}`. A writer killed before
its rename leaves it behind; the next write to the same target removes the temporaries whose
writing process is gone (never those of a live process, which may still be writing)."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


def _writer_gone(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's live process; not a pid
        return False
    return False


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Removes the temporaries of `path` left by writers that no longer run; returns them."""
    pattern = re.compile(re.escape(f".{path.name}.tmp-") + r"(\d+)-[A-Za-z0-9_]+")
    removed = []
    for entry in os.scandir(path.parent):
        m = pattern.fullmatch(entry.name)
        if m is None or not _writer_gone(int(m.group(1))):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:  # removed by another writer meanwhile
            continue
        removed.append(Path(entry.path))
    return removed


@contextmanager
def atomic_file(path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: it replaces `path` only when the block ends
    without an exception; otherwise `path` stays as it was and the temporary file is removed."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"expected a file path, got the directory {str(path)!r}")
    if not path.parent.exists():
        raise FileNotFoundError(f"the folder {str(path.parent)!r} does not exist")
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_atomic(path, data: bytes | str) -> Path:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    with atomic_file(path) as f:
        f.write(raw)
    return Path(path)
