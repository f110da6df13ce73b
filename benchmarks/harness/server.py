"""The benchmarks' server and what a benchmark gets: the server, its databases, connections.

Every benchmark works in a database of its own (created with pgretention installed, and dropped
again afterwards: ``with ctx.database(NAME) as dsn``) on either a throwaway local cluster with
``fsync`` on, or an existing server given with ``--dsn``. The server is the tests' server class,
:class:`pgretention.cluster.Server`; this module adds the cluster's settings, the record of the
environment a result was measured in, and the directory where the filesystem's own cost is measured.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgretention
from benchmarks.harness.results import log
from pgretention import installer
from pgretention.cluster import Server

Conn = psycopg.Connection[Any]

# The local cluster: durable (fsync, full_page_writes), checkpoints only when asked for (so that a
# measured phase never pays for one by chance), no autovacuum (no random lock conflicts with it).
CLUSTER_SETTINGS = {
    "shared_buffers": "'512MB'",
    "maintenance_work_mem": "'512MB'",
    "max_wal_size": "'32GB'",
    "checkpoint_timeout": "'1h'",
    "autovacuum": "off",
    "log_lock_waits": "on",
}


def start_server(dsn: str | None) -> Server:
    """The existing server of ``dsn``, or a throwaway local cluster (durable, :data:`CLUSTER_SETTINGS`)."""
    if dsn is not None:
        return Server(dsn)
    log("starting a throwaway PostgreSQL cluster (fsync on)")
    return Server.local(durable=True, settings=CLUSTER_SETTINGS)


def stop_server(server: Server) -> None:
    if server.cluster is not None:
        log("stopping and removing the throwaway cluster")
    server.stop()


@dataclass
class Context:
    """What a benchmark gets: the server, the scale, where results go, loaders in parallel, and a
    directory on the server's filesystem (``fs_dir``) where its own cost is measured."""

    server: Server
    scale: float
    out: Path
    jobs: int = 2
    fs_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    fs_note: str = ""

    @classmethod
    def on(cls, server: Server, scale: float, out: Path, jobs: int) -> Context:
        ctx = cls(server=server, scale=scale, out=out, jobs=jobs)
        if server.cluster is not None:
            ctx.fs_dir = _same_fs_dir(server.cluster.datadir)
            ctx.fs_note = "plain file written beside the data directory, on the same filesystem"
            return ctx
        try:
            with connect(server.conninfo()) as conn:
                datadir = Path(str(one(conn, "SHOW data_directory")))
        except psycopg.Error:
            datadir = Path("")
        if str(datadir) not in ("", ".") and datadir.is_dir():
            ctx.fs_dir = _same_fs_dir(datadir)
            ctx.fs_note = "plain file written beside the server's data directory, on the same filesystem"
        else:
            ctx.fs_note = (
                "the server's data directory is not reachable from here: plain file written to the "
                "temporary directory, which may be another filesystem than the server's"
            )
        return ctx

    @contextmanager
    def database(self, name: str, *, template: str | None = None) -> Iterator[str]:
        """A fresh database of this benchmark, with pgretention installed (or a copy of the benchmark's
        database ``template``), dropped again at the end; yields its DSN."""
        db = f"pgretention_bench_{name}"
        self.server.drop_database(db)
        self.server.create_database(db, template=None if template is None else f"pgretention_bench_{template}")
        try:
            dsn = self.server.conninfo(db)
            if template is None:
                installer.install(dsn, with_cron=False)
            yield dsn
        finally:
            try:
                self.server.drop_database(db)
            except psycopg.OperationalError as exc:  # server gone: nothing left to clean
                log(f"could not drop database {db}: {str(exc).strip()}")

    def environment(self) -> dict[str, Any]:
        """What the results of this run were measured on."""
        versions = self.server.versions()
        env: dict[str, Any] = {
            "server": "throwaway local cluster" if self.server.cluster is not None else "existing server (--dsn)",
            "cpus": os.cpu_count(),
            "memory_gb": _memory_gb(),
            "pgretention": pgretention.__version__,
            "filesystem_cost": self.fs_note,
            "sql_digest": sql_digest(),
            "postgresql": versions["server"],
            "pg_partman_available": versions.get("pg_partman"),
        }
        with connect(self.server.conninfo()) as conn:
            for name in ("shared_buffers", "fsync", "full_page_writes", "synchronous_commit", "wal_level"):
                env[name] = one(conn, sql.SQL("SHOW {}").format(sql.Identifier(name)))
        env["filesystem"] = _mount_of(self.fs_dir)
        return env


def sql_digest() -> str:
    """Short digest of the SQL that was installed, to tell apart results of different engine versions."""
    h = hashlib.sha256()
    for path in installer.sql_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def _same_fs_dir(datadir: Path) -> Path:
    """The data directory's parent when it is on the same filesystem, else the data directory."""
    parent = datadir.parent
    try:
        if os.stat(parent).st_dev == os.stat(datadir).st_dev and os.access(parent, os.W_OK):
            return parent
    except OSError:
        pass
    return datadir


def _mount_of(path: Path) -> dict[str, str]:
    """Filesystem type and mount options of the mount holding ``path`` (no paths are kept)."""
    best = ("", "", "")
    try:
        real = str(path.resolve())
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 4:
                    continue
                mnt = parts[1].replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best[0]):
                    best = (mnt, parts[2], parts[3])
    except OSError:
        return {}
    return {"type": best[1], "options": best[2]} if best[0] else {}


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


# -- connections and small queries ----------------------------------------------------------------


def connect(dsn: str, *, autocommit: bool = True) -> Conn:
    conn = psycopg.connect(dsn, autocommit=autocommit, application_name="pgretention-bench")
    conn.execute("SET TimeZone = 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


def one(conn: Conn, query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def server_today(conn: Conn) -> datetime:
    """Midnight UTC of the server's current day (partition bounds are UTC days)."""
    value = one(conn, "SELECT date_trunc('day', now())")
    assert isinstance(value, datetime)
    return value


def checkpoint(conn: Conn) -> None:
    conn.execute("CHECKPOINT")
