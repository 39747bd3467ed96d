"""A data directory has one owner: an OS lock, released on any exit, kill -9 included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import trio_durable as td
from trio_durable._storage._lock import DataDirLock

from ..core.objects import Counter


async def test_a_second_runtime_on_a_data_dir_in_use_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    async with td.open_runtime({"counters": Counter}, tmp_path / "data"):
        with pytest.raises(td.StorageError) as refused:
            async with td.open_runtime({"counters": Counter}, tmp_path / "data"):
                pass
    message = str(refused.value)
    assert str(tmp_path / "data") in message, message
    assert f"PID {os.getpid()}" in message, message


async def test_the_lock_is_released_when_the_runtime_closes(tmp_path: Path) -> None:
    async with td.open_runtime({"counters": Counter}, tmp_path / "data"):
        pass
    async with td.open_runtime({"counters": Counter}, tmp_path / "data") as runtime:
        assert await runtime.namespace("counters").get_by_name("a").increment() == 1


def test_the_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from trio_durable._storage._lock import DataDirLock
                DataDirLock.acquire({str(data)!r})
                print("locked", flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(td.StorageError, match=f"PID {holder.pid}"):
            DataDirLock.acquire(data)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    DataDirLock.acquire(data).release()  # free again: no stale file to clean


def test_a_worker_shares_its_supervisors_lock_through_the_descriptor(tmp_path: Path) -> None:
    lock = DataDirLock.acquire(tmp_path)
    try:
        shared = DataDirLock.inherit(tmp_path, lock.fd)
        assert shared.fd == lock.fd
        with pytest.raises(td.StorageError, match="in use"):
            DataDirLock.acquire(tmp_path)
    finally:
        lock.release()


def test_a_descriptor_of_another_file_is_not_the_lock(tmp_path: Path) -> None:
    lock = DataDirLock.acquire(tmp_path)
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(td.StorageError, match="is not the lock"):
            DataDirLock.inherit(tmp_path, other)
    finally:
        os.close(other)
        lock.release()
