"""Atomic file writes: a temporary sibling (unique per process) written and flushed to disk, then renamed over the
target, so a reader or a crash never sees half a file. The one place every command writes its JSON and tables; also
:func:`open_locked`, the per-file lock that keeps two runs from writing one output."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps_options) -> None:
    """``json.dumps(data, indent=2, **dumps_options)`` plus a final newline, written atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, **dumps_options) + "\n")


def save_atomic(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """``save(tmp)`` into a temporary sibling with the same suffix (savers pick the format from it), then rename it
    over ``path``: for figures and images written by libraries (``fig.savefig``, ``Image.save``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    save(tmp)
    os.replace(tmp, target)


class FileLockedError(OSError):
    """The file is locked by another open file (another process, or another writer in this one)."""


def open_locked(path: str | os.PathLike) -> int:
    """Open ``path`` read-write (created if missing, never truncated) under an exclusive lock; returns the descriptor.

    The lock is ``fcntl.flock`` on the open file, so it goes with the descriptor: closing it, or the process dying in
    any way (SIGKILL included), releases it, and no stale lock file is ever left behind. Raises
    :class:`FileLockedError` at once (no waiting) when another open file holds the lock. A file renamed or replaced
    by its previous holder between our open and our lock is opened again, so the lock is always on the file that
    ``path`` names. POSIX only: where ``fcntl`` is missing (Windows) the file is opened without a lock.
    """
    path = os.fspath(path)
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                raise FileLockedError(errno.EWOULDBLOCK, "locked by another process", path)
            held = os.fstat(fd)
            try:
                named = os.stat(path)
            except FileNotFoundError:
                named = None
            if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder renamed or replaced it meanwhile: open what the path names now
    raise FileLockedError(errno.EWOULDBLOCK, "replaced again and again by another process", path)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):  # a file system without flock
            return True
        raise
    return True
