"""A data directory has one owner: an OS lock held for the life of a runtime or cluster.

The lock is ``flock(LOCK_EX)`` on ``<data_dir>/trio_durable.lock``. The
kernel releases it when the last descriptor of the lock's open file is
closed, so it never outlives its holder (``kill -9`` included): there is no
stale file to clean up. The file holds the PID of the process that took
the lock, so a refusal can say who holds it.

A cluster's supervisor takes the lock and passes its descriptor to its
workers (they share the lock: it belongs to the open file, not to a
process); a worker proves it belongs to the cluster by presenting that
descriptor (:meth:`DataDirLock.inherit`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from .._exceptions import StorageError

__all__ = ["LOCK_NAME", "DataDirLock"]

LOCK_NAME: Final = "trio_durable.lock"


class DataDirLock:
    """The exclusive lock on one data directory. Made by :meth:`acquire` or :meth:`inherit`."""

    __slots__ = ("_fd", "data_dir")

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    @property
    def fd(self) -> int:
        """The lock file's descriptor (to pass to a cluster's workers)."""
        if self._fd is None:
            raise ValueError("the data directory lock was released")
        return self._fd

    @classmethod
    def acquire(cls, data_dir: str | os.PathLike[str]) -> DataDirLock:
        """Take the lock of ``data_dir`` (created if missing, mode 0700).

        Raises:
            StorageError: another process holds it; the message names the
                directory and that process's PID.
        """
        path = Path(data_dir)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = path / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StorageError(
                f"data directory {str(path)!r} is in use by another runtime "
                f"(process {holder}); a data directory has one owner"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @classmethod
    def inherit(cls, data_dir: str | os.PathLike[str], fd: int) -> DataDirLock:
        """Adopt the lock of a cluster's supervisor, passed to this worker as ``fd``.

        Raises:
            StorageError: ``fd`` is not the lock of ``data_dir``, or does not
                hold it.
        """
        path = Path(data_dir)
        try:
            mine = os.fstat(fd)
            theirs = os.stat(path / LOCK_NAME)
        except OSError as exc:
            raise StorageError(
                f"no lock of {str(path)!r} was passed to this worker: {exc}"
            ) from exc
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            raise StorageError(f"descriptor {fd} is not the lock of data directory {str(path)!r}")
        try:
            # The lock belongs to the open file we share with the supervisor:
            # taking it again through the same open file succeeds at once.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(
                f"descriptor {fd} does not hold the lock of data directory {str(path)!r}"
            ) from None
        return cls(path, fd)

    def release(self) -> None:
        """Close our descriptor of the lock (the lock ends with its last holder). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"
