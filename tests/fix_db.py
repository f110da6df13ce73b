"""Which PostgreSQL the tests run against, in this order:

1. ``PGRETENTION_TEST_DSN``: an existing server (the DSN's database is used for administration);
2. testcontainers, when a Docker engine answers (image built from ``docker/Dockerfile``);
3. a local throwaway cluster started from the distribution's binaries (``pgretention.cluster``).

Each test gets a database of its own; the server starts once per session.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgretention.cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent


class Server:
    kind = "external"

    def __init__(self, dsn: str) -> None:
        self.base_dsn = dsn
        self.cluster: LocalCluster | None = None
        self.container: Any = None

    def conninfo(self, dbname: str | None = None, **extra: str) -> str:
        kw: dict[str, str] = dict(extra)
        if dbname is not None:
            kw["dbname"] = dbname
        return make_conninfo(self.base_dsn, **kw)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo(), autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def versions(self) -> dict[str, str]:
        out = {}
        with self.admin() as conn:
            out["server"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            for name, ver in conn.execute(
                "SELECT name, default_version FROM pg_available_extensions"
                " WHERE name IN ('pg_partman', 'pg_cron', 'pgcrypto')"
            ):
                out[name] = ver
        return out

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.container is not None:
            self.container.stop()


def docker_answers() -> bool:
    if os.environ.get("PGRETENTION_NO_DOCKER"):
        return False
    if not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
            return True
        finally:
            client.close()
    except Exception:
        return False


def start_server() -> Server:
    srv = _start_server()
    try:
        with srv.admin() as conn:
            cron_db = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]  # type: ignore[index]
            current = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            if cron_db == current:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    except psycopg.Error:
        pass
    return srv


def _start_server() -> Server:
    dsn = os.environ.get("PGRETENTION_TEST_DSN")
    if dsn:
        return Server(dsn)
    if docker_answers():
        from testcontainers.core.image import DockerImage
        from testcontainers.postgres import PostgresContainer

        major = os.environ.get("PGRETENTION_PG_MAJOR", "15")
        tag = f"pgretention-test:{major}"
        DockerImage(path=str(ROOT / "docker"), tag=tag, buildargs={"PG_MAJOR": major}).build()
        container = PostgresContainer(image=tag, username="postgres", password="pgretention", dbname="postgres")
        container.start()
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5432)
        srv = Server(f"host={host} port={port} user=postgres password=pgretention dbname=postgres")
        srv.kind = "testcontainers"
        srv.container = container
        return srv
    cluster = LocalCluster()
    cluster.start()
    srv = Server(cluster.conninfo())
    srv.kind = "local"
    srv.cluster = cluster
    return srv
