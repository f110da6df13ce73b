"""What the benchmarks share: the server they run on, CDR test data, measurements and reporting.

Every benchmark works in a database of its own (created, with pgretention installed, and dropped
again afterwards) on either a throwaway local cluster with ``fsync`` on, or an existing server
given with ``--dsn``. Call detail records (CDRs) are generated server side, deterministically: the
same day plan gives the same rows in every table, so methods compared in one run see identical data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pgretention
from pgretention import installer
from pgretention.cluster import LocalCluster

Conn = psycopg.Connection[Any]

DROP_AFTER_DAYS = 30
CDR_COLUMNS = "id bigint, started_at timestamptz NOT NULL, caller text, callee text, duration int"
INDEXED_COLUMNS = ("started_at", "caller", "callee")
MB = 1_000_000

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

_T0 = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr, with the time since the harness started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- the server --------------------------------------------------------------------------------


class Server:
    """A throwaway local cluster (``dsn is None``) or an existing server.

    :param dsn: an existing server; its database is used to create and drop the benchmark databases.
    """

    def __init__(self, dsn: str | None = None) -> None:
        self.external_dsn = dsn
        self.cluster: LocalCluster | None = None
        self._admin_dsn = ""
        self.fs_dir: Path | None = None
        self.fs_note = ""

    # lifecycle
    def start(self) -> Server:
        if self.external_dsn is None:
            log("starting a throwaway PostgreSQL cluster (fsync on)")
            self.cluster = LocalCluster(durable=True, settings=CLUSTER_SETTINGS)
            self.cluster.start()
            self._admin_dsn = self.cluster.conninfo("postgres")
            self.fs_dir = _same_fs_dir(self.cluster.datadir)
            self.fs_note = "plain file written beside the data directory, on the same filesystem"
        else:
            self._admin_dsn = self.external_dsn
            self._external_fs_dir()
        return self

    def stop(self) -> None:
        if self.cluster is not None:
            log("stopping and removing the throwaway cluster")
            self.cluster.stop()
            self.cluster = None

    @property
    def can_restart(self) -> bool:
        return self.cluster is not None

    def restart(self) -> None:
        """Stop and start the server keeping its data: shared buffers and backend caches go cold."""
        if self.cluster is not None:
            self.cluster.restart()

    def _external_fs_dir(self) -> None:
        try:
            with self.admin() as conn:
                datadir = Path(str(one(conn, "SHOW data_directory")))
        except psycopg.Error:
            datadir = Path("")
        if str(datadir) not in ("", ".") and datadir.is_dir():
            self.fs_dir = _same_fs_dir(datadir)
            self.fs_note = "plain file written beside the server's data directory, on the same filesystem"
        else:
            self.fs_dir = Path(tempfile.gettempdir())
            self.fs_note = (
                "the server's data directory is not reachable from here: plain file written to the "
                "temporary directory, which may be another filesystem than the server's"
            )

    # databases
    def dsn(self, dbname: str) -> str:
        return make_conninfo(self._admin_dsn, dbname=dbname)

    def admin(self) -> Conn:
        return connect(self._admin_dsn)

    def create_database(self, name: str) -> str:
        """A fresh database with pgretention installed; returns its DSN."""
        self.drop_database(name)
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = self.dsn(name)
        installer.install(dsn, with_cron=False)
        return dsn

    def drop_database(self, name: str) -> None:
        try:
            with self.admin() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.OperationalError as exc:  # server gone: nothing left to clean
            log(f"could not drop database {name}: {str(exc).strip()}")

    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {
            "server": "throwaway local cluster" if self.cluster is not None else "existing server (--dsn)",
            "cpus": os.cpu_count(),
            "memory_gb": _memory_gb(),
            "pgretention": pgretention.__version__,
            "filesystem_cost": self.fs_note,
            "sql_digest": sql_digest(),
        }
        with self.admin() as conn:
            env["postgresql"] = one(conn, "SHOW server_version")
            env["pg_partman_available"] = one(
                conn, "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_partman'"
            )
            for name in ("shared_buffers", "fsync", "full_page_writes", "synchronous_commit", "wal_level"):
                env[name] = one(conn, sql.SQL("SHOW {}").format(sql.Identifier(name)))
        if self.fs_dir is not None:
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


def qualified(table: str) -> sql.Composable:
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema or "public", name)


def server_today(conn: Conn) -> datetime:
    """Midnight UTC of the server's current day (partition bounds are UTC days)."""
    value = one(conn, "SELECT date_trunc('day', now())")
    assert isinstance(value, datetime)
    return value


def checkpoint(conn: Conn) -> None:
    conn.execute("CHECKPOINT")


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


def time_partitions(conn: Conn, table: str) -> list[tuple[str, datetime, int]]:
    """Leaf partitions with a range bound (the default partition left out): name, lower bound, bytes."""
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname),"
        " (regexp_match(pg_get_expr(c.relpartbound, c.oid),"
        "               '^FOR VALUES FROM \\(''([^'']*)''\\)'))[1]::timestamptz,"
        " pg_total_relation_size(t.relid)"
        " FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
        [table],
    ).fetchall()
    out = [(str(name), lower, int(size)) for name, lower, size in rows if isinstance(lower, datetime)]
    return sorted(out, key=lambda r: r[1])


def partman_schema(conn: Conn) -> str:
    return str(
        one(
            conn,
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'pg_partman'",
        )
    )


# -- tables --------------------------------------------------------------------------------------


def drop_after_json() -> str:
    return json.dumps({"default": {"drop_after": f"{DROP_AFTER_DAYS} days"}})


def create_pgretention_table(conn: Conn, table: str, start: datetime, premake: int = 4) -> None:
    """A table managed by pgretention: daily partitions from ``start``, drop_after 30 days."""
    conn.execute(
        "SELECT pgretention.create_table(%s, %s, 'started_at', '1 day', %s::jsonb,"
        " p_start => %s, p_premake => %s)",
        [table, CDR_COLUMNS, drop_after_json(), start, premake],
    )


def create_partman_table(conn: Conn, table: str, start: datetime, premake: int = 4) -> None:
    """The same layout managed by pg_partman alone, with pg_partman's retention of 30 days."""
    schema = sql.Identifier(partman_schema(conn))
    conn.execute(
        sql.SQL("CREATE TABLE {} ({}) PARTITION BY RANGE (started_at)").format(
            qualified(table), sql.SQL(CDR_COLUMNS)
        )
    )
    conn.execute(
        sql.SQL(
            "SELECT {}.create_parent(p_parent_table := %s, p_control := 'started_at', p_type := 'native',"
            " p_interval := '1 day', p_premake := %s, p_start_partition := %s, p_jobmon := false)"
        ).format(schema),
        [table, premake, start.strftime("%Y-%m-%d %H:%M:%S")],
    )
    conn.execute(
        sql.SQL(
            "UPDATE {}.part_config SET retention = %s, retention_keep_table = false,"
            " retention_keep_index = false WHERE parent_table = %s"
        ).format(schema),
        [f"{DROP_AFTER_DAYS} days", table],
    )


def drop_partman_table(conn: Conn, table: str) -> None:
    schema = sql.Identifier(partman_schema(conn))
    template = one(
        conn,
        sql.SQL("SELECT template_table FROM {}.part_config WHERE parent_table = %s").format(schema),
        [table],
    )
    conn.execute(sql.SQL("DELETE FROM {}.part_config WHERE parent_table = %s").format(schema), [table])
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(qualified(table)))
    if template:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(str(template))))


def drop_pgretention_table(conn: Conn, table: str) -> None:
    conn.execute("SELECT pgretention.release_table(%s)", [table])
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(qualified(table)))


def create_plain_table(conn: Conn, table: str) -> None:
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(qualified(table), sql.SQL(CDR_COLUMNS)))


def add_indexes(conn: Conn, table: str) -> None:
    """Indexes on time, caller and callee; on a partitioned table they reach every partition."""
    for column in INDEXED_COLUMNS:
        conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(qualified(table), sql.Identifier(column)))


def settle(conn: Conn, table: str) -> None:
    """After a load: autovacuum off for the table's leaves (also on a --dsn server), VACUUM ANALYZE,
    so that every method starts from the steady state of data that autovacuum has long seen."""
    leaves = [
        r[0]
        for r in conn.execute(
            "SELECT t.relid::regclass::text FROM pg_partition_tree(%s::regclass) t WHERE t.isleaf", [table]
        )
    ]
    for leaf in leaves or [table]:
        conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(sql.SQL(leaf)))
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(qualified(table)))


# -- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """``rows`` CDRs spread over the UTC day starting at ``start``; ids from ``first_id``."""

    start: datetime
    rows: int
    first_id: int


def plan_days(today: datetime, spec: Sequence[tuple[int, int]], first_id: int = 1) -> list[Day]:
    """``spec``: (days before today, rows) pairs -> days with consecutive id ranges."""
    days = []
    next_id = first_id
    for days_ago, rows in spec:
        days.append(Day(today - timedelta(days=days_ago), rows, next_id))
        next_id += rows
    return days


# One piece of a day: ids first_id + lo .. first_id + hi. Numbers are E.164 mobile numbers
# (+316 and 8 digits), durations exponential with a 3-minute mean; all derived from the id.
_INSERT = """
INSERT INTO {table} (id, started_at, caller, callee, duration)
SELECT x.id,
       %(day)s::timestamptz + make_interval(secs => (x.g + (hashint8(x.id) & 1023) / 1024.0) * %(step)s),
       '+316' || (10000000 + (hashint8(x.id) & 2147483647) %% 90000000)::text,
       '+316' || (10000000 + (hashint8(-x.id) & 2147483647) %% 90000000)::text,
       floor(-180 * ln(1 - (hashint8(x.id * 7 + 3) & 1048575) / 1048576.0))::int
FROM (SELECT g, %(first)s::bigint + g AS id FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS x
"""


def load(
    dsn: str, tables: Sequence[str], days: Sequence[Day], *, jobs: int = 2, chunk: int = 500_000
) -> float:
    """Insert the rows of ``days`` into each of ``tables`` (same rows in each), ``jobs`` connections
    in parallel. Returns seconds taken."""
    pieces: list[tuple[str, Day, int, int]] = []
    for table in tables:
        for day in days:
            for lo in range(0, day.rows, chunk):
                pieces.append((table, day, lo, min(lo + chunk, day.rows) - 1))
    pieces.sort(key=lambda p: p[3] - p[2], reverse=True)
    queues: list[list[tuple[str, Day, int, int]]] = [pieces[i::jobs] for i in range(jobs)]

    def worker(queue: list[tuple[str, Day, int, int]]) -> int:
        n = 0
        with connect(dsn) as conn:
            for table, day, lo, hi in queue:
                conn.execute(
                    sql.SQL(_INSERT).format(table=qualified(table)),
                    {"day": day.start, "step": 86400.0 / day.rows, "first": day.first_id, "lo": lo, "hi": hi},
                )
                n += hi - lo + 1
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        total = sum(pool.map(worker, queues))
    seconds = time.perf_counter() - t0
    log(
        f"loaded {total:,} rows into {', '.join(tables)} in {seconds:.1f}s"
        f" ({total / max(seconds, 1e-9):,.0f} rows/s)"
    )
    return seconds


# -- the filesystem's own cost ------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
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
    chunk = os.urandom(8 << 20)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            left = nbytes
            while left > 0:
                left -= os.write(fd, chunk[: min(left, len(chunk))])
            os.fsync(fd)
        finally:
            os.close(fd)
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
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                left = size
                while left > 0:
                    left -= os.write(fd, chunk[: min(left, len(chunk))])
                os.fsync(fd)
            finally:
                os.close(fd)
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


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Check:
    """A target: ``value`` against ``limit`` (at most, or at least when ``at_least``)."""

    name: str
    value: float
    limit: float
    unit: str = ""
    at_least: bool = False

    @property
    def ok(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        op = ">=" if self.at_least else "<="
        return (
            f"[{'PASS' if self.ok else 'MISS'}] {self.name}: {_num(self.value)}{self.unit}"
            f" (target {op} {_num(self.limit)}{self.unit})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "at_least": self.at_least,
            "ok": self.ok,
        }


@dataclass
class Result:
    name: str
    title: str
    scale: float
    params: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    ratios: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def render(self) -> str:
        lines = [f"== {self.name}: {self.title} (scale {self.scale:g})"]
        lines += [f"   {k}: {v}" for k, v in self.params.items()]
        if self.rows:
            lines += ["", *render_table(self.headers, self.rows)]
        if self.ratios:
            lines += ["", *[f"   {r}" for r in self.ratios]]
        if self.checks:
            lines += ["", *[f"   {c.line()}" for c in self.checks]]
        if self.notes:
            lines += ["", *[f"   note: {n}" for n in self.notes]]
        if self.plots:
            lines += [f"   plot: {p}" for p in self.plots]
        lines.append(f"   ({self.seconds:.0f}s including setup)")
        return "\n".join(lines)

    def as_dict(self, environment: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "scale": self.scale,
            "params": self.params,
            "figures": self.figures,
            "checks": [c.as_dict() for c in self.checks],
            "ratios": self.ratios,
            "notes": self.notes,
            "plots": self.plots,
            "seconds": round(self.seconds, 1),
            "environment": environment,
            "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(r: Sequence[str]) -> str:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "   " + "  ".join(cells)

    return [fmt(headers), "   " + "  ".join("-" * w for w in widths), *[fmt(r) for r in rows]]


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_ms(ms: float) -> str:
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


@dataclass
class Context:
    """What a benchmark gets: the server, the scale, where results go."""

    server: Server
    scale: float
    out: Path
    jobs: int = 2

    def database(self, name: str) -> str:
        return self.server.create_database(f"pgretention_bench_{name}")

    def drop_database(self, name: str) -> None:
        self.server.drop_database(f"pgretention_bench_{name}")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: Path, name: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path.name


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(milliseconds, result) of ``fn(*args)``."""
    t0 = time.perf_counter()
    value = fn(*args)
    return (time.perf_counter() - t0) * 1e3, value
