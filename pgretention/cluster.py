"""A throwaway PostgreSQL cluster started from the distribution's binaries, and a server to work on.

:class:`LocalCluster` is used by the demo, the tests and the benchmarks. The cluster is created with
``initdb`` in a directory of its own, listens on a free TCP port on 127.0.0.1 and on a unix socket
in its own directory, preloads pg_cron, and is stopped and removed by :meth:`LocalCluster.stop`.
When the current user is root the server runs as the ``postgres`` OS user, as initdb refuses root.

:class:`Server` is what the tests and the benchmarks create and drop their databases on: such a
throwaway cluster, or an existing server given by a connection string.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgretention.errors import PgRetentionError

PG_LIB_ROOT = Path("/usr/lib/postgresql")
PG_SHARE_ROOT = Path("/usr/share/postgresql")
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "pgretention"  # local throwaway clusters only; used by TCP password tests


def _has_extensions(major: str) -> bool:
    ext = PG_SHARE_ROOT / major / "extension"
    return (ext / "pg_partman.control").exists() and (ext / "pg_cron.control").exists()


def find_bindir() -> Path:
    """Return the bin directory of the newest installed server that has pg_partman and pg_cron.

    ``PGRETENTION_PG_BINDIR`` overrides the search.

    :raises PgRetentionError: when no suitable server is installed.
    """
    env = os.environ.get("PGRETENTION_PG_BINDIR")
    if env:
        return Path(env)
    majors = sorted(
        (p.name for p in PG_LIB_ROOT.iterdir() if p.name.isdigit()) if PG_LIB_ROOT.exists() else [],
        key=int,
        reverse=True,
    )
    for major in majors:
        if (PG_LIB_ROOT / major / "bin" / "postgres").exists() and _has_extensions(major):
            return PG_LIB_ROOT / major / "bin"
    raise PgRetentionError(
        "no PostgreSQL server with pg_partman and pg_cron is installed; run scripts/setup.sh"
    )


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """An ephemeral cluster: ``initdb`` + ``pg_ctl start``; removed again by :meth:`stop`.

    :param base_dir: where to create the cluster (a new temporary directory when omitted).
    :param durable: keep fsync on (benchmarks); tests turn it off for speed.
    :param settings: extra ``postgresql.conf`` settings.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        durable: bool = False,
        settings: dict[str, str] | None = None,
        keep: bool = False,
    ) -> None:
        self.bindir = find_bindir()
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgretention-")) if base_dir is None else base_dir
        self.datadir = self.base_dir / "data"
        self.sockdir = self.base_dir / "sock"
        self.logfile = self.base_dir / "server.log"
        self.port = free_port()
        self.durable = durable
        self.settings = settings or {}
        self.keep = keep
        self.running = False

    # -- process helpers -------------------------------------------------------------------
    def _run_as_owner(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            args = ["runuser", "-u", SUPERUSER, "--", *args]
        return subprocess.run(args, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SUPERUSER)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def major(self) -> int:
        return int(self.bindir.parent.name) if self.bindir.parent.name.isdigit() else 0

    # -- lifecycle ---------------------------------------------------------------------------
    def init(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        for p in (self.base_dir, self.sockdir):
            self._chown(p)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        self._chown(pwfile)
        try:
            self._run_as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D", str(self.datadir),
                    "-U", SUPERUSER,
                    "--pwfile", str(pwfile),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E", "UTF8",
                    "--locale=C",
                ]
            )
        except subprocess.CalledProcessError as exc:
            raise PgRetentionError(f"initdb failed: {exc.stderr.strip()}") from exc
        finally:
            pwfile.unlink(missing_ok=True)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockdir}'",
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": "'postgres'",
            "cron.use_background_workers": "on",
            "max_worker_processes": "16",
            "max_connections": "100",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %d %a '",
            "timezone": "'UTC'",
        }
        if not self.durable:
            conf.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        conf.update(self.settings)
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write("\n# pgretention local cluster\n")
            for k, v in conf.items():
                fh.write(f"{k} = {v}\n")
        with open(self.datadir / "pg_hba.conf", "a") as fh:
            fh.write("host replication all 127.0.0.1/32 scram-sha-256\n")

    def start(self) -> LocalCluster:
        if not self.datadir.exists():
            self.init()
        try:
            self._run_as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                 "-w", "-t", "60", "start"]
            )
        except subprocess.CalledProcessError as exc:
            log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise PgRetentionError(f"server did not start: {exc.stderr.strip()} {log}") from exc
        self.running = True
        return self

    def stop(self, mode: str = "fast", remove: bool = True) -> None:
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run_as_owner(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]
                )
            self.running = False
        if remove and self._own_dir and not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def restart(self, mode: str = "fast") -> None:
        """Stop (``immediate`` simulates a crash) and start again, keeping the data."""
        self.stop(mode=mode, remove=False)
        self.start()

    def make_standby(self) -> LocalCluster:
        """A streaming replica of this cluster (pg_basebackup), started; stop() removes it."""
        standby = LocalCluster()
        standby.base_dir.mkdir(parents=True, exist_ok=True)
        standby.sockdir.mkdir(exist_ok=True)
        os.chmod(standby.base_dir, 0o755)
        for p in (standby.base_dir, standby.sockdir):
            standby._chown(p)
        env = dict(os.environ, PGPASSWORD=SUPERUSER_PASSWORD)
        try:
            self._run_as_owner(
                [str(self.bindir / "pg_basebackup"), "-D", str(standby.datadir), "-R", "-X", "stream", "-c", "fast",
                 "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER],
                env=env,
            )
        except subprocess.CalledProcessError as exc:
            raise PgRetentionError(f"pg_basebackup failed: {exc.stderr.strip()}") from exc
        with open(standby.datadir / "postgresql.auto.conf", "a") as fh:
            fh.write(f"port = {standby.port}\nunix_socket_directories = '{standby.sockdir}'\n")
        return standby.start()

    def promote(self) -> None:
        self._run_as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "promote"])

    def conninfo(self, dbname: str = "postgres", **extra: str) -> str:
        parts = {"host": str(self.sockdir), "port": str(self.port), "user": SUPERUSER, "dbname": dbname}
        parts.update(extra)
        return " ".join(f"{k}={_quote(v)}" for k, v in parts.items())

    def tcp_conninfo(self, dbname: str = "postgres", **extra: str) -> str:
        return self.conninfo(dbname, host="127.0.0.1", **extra)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "/._-" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def local_cluster(**kw: object) -> Iterator[LocalCluster]:
    cluster = LocalCluster(**kw)  # type: ignore[arg-type]
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Server:
    """A PostgreSQL server to create and drop databases on: an existing one, or a throwaway cluster.

    :param dsn: connection string of the database used for administration.
    :param cluster: the throwaway cluster behind ``dsn``, when there is one (see :meth:`local`).
    :param kind: how the server came to be (``external``, ``local``, ...), for reports.
    :param on_stop: also called by :meth:`stop`, for example to stop a container.
    """

    def __init__(self, dsn: str, *, cluster: LocalCluster | None = None, kind: str = "external",
                 on_stop: Callable[[], object] | None = None) -> None:
        self.base_dsn = dsn
        self.cluster = cluster
        self.kind = kind
        self._on_stop = on_stop

    @classmethod
    def local(cls, **cluster: Any) -> Server:
        """A throwaway :class:`LocalCluster`, started (``cluster``: its keyword arguments)."""
        lc = LocalCluster(**cluster)
        try:
            lc.start()
        except BaseException:
            lc.stop()  # removes what initdb left
            raise
        return cls(lc.conninfo(), cluster=lc, kind="local")

    def conninfo(self, dbname: str | None = None, **extra: str) -> str:
        """The connection string of database ``dbname`` (default: the administration database)."""
        kw: dict[str, str] = dict(extra)
        if dbname is not None:
            kw["dbname"] = dbname
        return make_conninfo(self.base_dsn, **kw)

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the administration database."""
        return psycopg.connect(self.conninfo(), autocommit=True)

    def create_database(self, name: str | None = None, *, prefix: str = "t", template: str | None = None) -> str:
        """Create database ``name`` (default: ``prefix`` and a random suffix), a copy of ``template``
        when given; return its name."""
        name = name or f"{prefix}_{uuid.uuid4().hex[:10]}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self.admin() as conn:
            conn.execute(query)
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, ending its sessions."""
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def versions(self) -> dict[str, str]:
        """The server's version and the default versions of pg_partman, pg_cron and pgcrypto."""
        with self.admin() as conn:
            out = {"server": str(conn.execute("SHOW server_version").fetchall()[0][0])}
            for name, ver in conn.execute(
                "SELECT name, default_version FROM pg_available_extensions"
                " WHERE name IN ('pg_partman', 'pg_cron', 'pgcrypto')"
            ):
                out[name] = ver
        return out

    @property
    def can_restart(self) -> bool:
        return self.cluster is not None

    def restart(self, mode: str = "fast") -> None:
        """Stop and start a throwaway cluster keeping its data (caches go cold); nothing for others."""
        if self.cluster is not None:
            self.cluster.restart(mode=mode)

    def stop(self) -> None:
        """Stop and remove a throwaway cluster (and call ``on_stop``); an existing server is left as is."""
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self._on_stop is not None:
            self._on_stop()
            self._on_stop = None
