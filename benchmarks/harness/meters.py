"""What the benchmarks measure besides wall time: CPU of other processes, WAL, sizes, and the
filesystem's own cost of freeing the bytes a drop frees."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.harness.server import one
from pgretention.cluster import Server

Conn = psycopg.Connection[Any]
MB = 1_000_000


class CpuMeter:
    """CPU used by other processes of the machine while a benchmark runs, as a share of all CPUs.

    Everything the machine's CPUs did (``/proc/stat``) minus what this process and the local
    cluster's processes used (the postmaster, its live children, and the children it reaped) is
    what the rest of the machine took from the benchmark. Sampled every half second in a thread,
    so that the postmasters of restarts are all counted. Linux only; elsewhere it reports nothing.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._postmasters: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._t0 = 0.0
        self._busy0 = 0.0
        self._self0 = 0.0

    def _busy(self) -> float:
        with open("/proc/stat") as fh:
            v = [float(x) for x in fh.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / self._tick  # all but idle and iowait

    def _self(self) -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def _proc_cpu(self, pid: int, children: bool) -> tuple[int, float]:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ppid = int(fields[1])
        ticks = float(fields[11]) + float(fields[12])
        if children:
            ticks += float(fields[13]) + float(fields[14])
        return ppid, ticks / self._tick

    def _sample(self) -> None:
        cluster = self.server.cluster
        if cluster is None:
            return
        try:
            pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
            total = self._proc_cpu(pid, children=True)[1]
        except (OSError, ValueError, IndexError):
            return
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid, cpu = self._proc_cpu(int(entry), children=False)
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == pid:
                    total += cpu
        self._postmasters[pid] = max(total, self._postmasters.get(pid, 0.0))

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def start(self) -> CpuMeter:
        if not os.path.exists("/proc/stat"):
            return self
        self._sample()
        self._base = dict(self._postmasters)
        self._t0, self._busy0, self._self0 = time.monotonic(), self._busy(), self._self()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float | None] | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = time.monotonic() - self._t0
        machine = self._busy() - self._busy0
        ours = self._self() - self._self0
        ours += sum(v - self._base.get(pid, 0.0) for pid, v in self._postmasters.items())
        cpus = os.cpu_count() or 1
        local = self.server.cluster is not None  # an external server's processes cannot be told apart
        return {
            "wall_s": round(wall, 1),
            "machine_busy_pct": round(100 * machine / (wall * cpus), 1),
            "benchmark_pct": round(100 * ours / (wall * cpus), 1) if local else None,
            "others_pct": round(100 * max(0.0, machine - ours) / (wall * cpus), 1) if local else None,
        }


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(milliseconds, result) of ``fn(*args)``."""
    t0 = time.perf_counter()
    value = fn(*args)
    return (time.perf_counter() - t0) * 1e3, value


# -- WAL and sizes ---------------------------------------------------------------------------------


def wal_lsn(conn: Conn) -> str:
    return str(one(conn, "SELECT pg_current_wal_lsn()"))


def wal_since(conn: Conn, lsn: str) -> int:
    return int(one(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", [lsn]))


def total_size(conn: Conn, table: str) -> int:
    """Bytes of a table with its indexes and TOAST; for a partitioned table, of all its partitions."""
    return int(
        one(
            conn,
            "SELECT CASE WHEN c.relkind = 'p'"
            " THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)"
            " ELSE pg_total_relation_size(c.oid) END FROM pg_class c WHERE c.oid = %s::regclass",
            [table],
        )
    )


# -- the filesystem's own cost ------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, size: int, chunk: bytes) -> None:
    """A new file of ``size`` bytes (copies of ``chunk``), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, chunk[: min(left, len(chunk))])
        os.fsync(fd)
    finally:
        os.close(fd)


def fs_free_cost(directory: Path, nbytes: int) -> dict[str, float]:
    """What the filesystem alone needs to free ``nbytes``: a plain file of that size is written in
    ``directory`` and fsynced, then ``truncate`` to 0 and ``unlink`` are timed (what PostgreSQL does
    to a dropped relation's files at commit). Times in ms; ``free_ms`` = truncate + unlink."""
    if nbytes <= 0:
        return {"bytes": 0, "truncate_ms": 0.0, "unlink_ms": 0.0, "free_ms": 0.0}
    path = directory / f"pgretention-bench-{uuid.uuid4().hex}.tmp"
    try:
        _write_file(path, nbytes, os.urandom(8 << 20))
        _fsync_dir(directory)
        t0 = time.perf_counter()
        os.truncate(path, 0)
        t1 = time.perf_counter()
        os.unlink(path)
        t2 = time.perf_counter()
    finally:
        if path.exists():
            path.unlink()
    return {
        "bytes": nbytes,
        "truncate_ms": (t1 - t0) * 1e3,
        "unlink_ms": (t2 - t1) * 1e3,
        "free_ms": (t2 - t0) * 1e3,
    }


_RELATION_FILES = """
WITH t AS (SELECT unnest(%s::regclass[]) AS oid),
rels AS (
    SELECT t.oid FROM t
    UNION ALL SELECT i.indexrelid FROM pg_index i JOIN t ON i.indrelid = t.oid
    UNION ALL SELECT c.reltoastrelid FROM pg_class c JOIN t ON c.oid = t.oid WHERE c.reltoastrelid <> 0
    UNION ALL SELECT i.indexrelid FROM pg_index i JOIN pg_class c ON i.indrelid = c.reltoastrelid
              JOIN t ON c.oid = t.oid
)
SELECT f.fork, pg_relation_size(rels.oid, f.fork)
FROM rels, unnest(ARRAY['main', 'fsm', 'vm', 'init']) AS f(fork)
"""
SEGMENT = 1 << 30


def relation_files(conn: Conn, tables: Sequence[str]) -> list[int]:
    """Sizes of the files that hold ``tables`` with their indexes and TOAST (1 GB segments): every
    relation's main fork, and the other forks that exist."""
    sizes: list[int] = []
    for fork, size in conn.execute(_RELATION_FILES, [list(tables)]):
        if fork != "main" and size == 0:
            continue
        sizes += [SEGMENT] * (size // SEGMENT) + ([size % SEGMENT] if size % SEGMENT or size == 0 else [])
    return sizes


def fs_free_cost_files(directory: Path, sizes: Sequence[int]) -> dict[str, float]:
    """Like :func:`fs_free_cost`, for one plain file per size (the same files a drop frees): each is
    truncated to 0 and unlinked, all timed together."""
    sub = directory / f"pgretention-bench-{uuid.uuid4().hex}"
    sub.mkdir()
    chunk = os.urandom(8 << 20)
    paths = []
    try:
        for n, size in enumerate(sizes):
            path = sub / f"f{n}"
            _write_file(path, size, chunk)
            paths.append(path)
        _fsync_dir(sub)
        t0 = time.perf_counter()
        for path in paths:
            os.truncate(path, 0)
            os.unlink(path)
        seconds = time.perf_counter() - t0
    finally:
        for path in sub.iterdir():
            path.unlink()
        sub.rmdir()
    return {"bytes": sum(sizes), "files": len(sizes), "free_ms": seconds * 1e3}
