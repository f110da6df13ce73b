"""Install, upgrade and remove pgretention in a database.

Install runs in one transaction: roles, the ``pgretention`` schema, the extensions it needs
(pg_partman in its own schema, pgcrypto), the catalog tables through alembic, then every file of
``sql/`` in manifest order, then grants. What it created is recorded in
``pgretention.installation`` so that :func:`uninstall` removes exactly that. The pg_cron job is
scheduled after the commit (possibly in another database, ``cron.database_name``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from pgretention import __version__, schedule
from pgretention.db import Conn, build_conninfo, connect, first_line, translate
from pgretention.errors import (
    ConnectionFailed,
    InvalidInput,
    MissingExtension,
    NotInstalled,
    PermissionDenied,
    PgRetentionError,
)

SCHEMA = "pgretention"
EXEC_SCHEMA = "pgretention_exec"  # executors that act as a table's owner
ROLES = ("pgretention_admin", "pgretention_operator", "pgretention_auditor")
PARTMAN_SCHEMA = "partman"
MIN_SERVER = 130000
INSTALL_LOCK = 0x70677265  # advisory lock key shared by install, upgrade and uninstall


def resource_dir(name: str) -> Path:
    """``sql`` or ``migrations``: inside the wheel (``_name``) or beside the package (checkout)."""
    here = Path(__file__).resolve().parent
    for cand in (here / f"_{name}", here.parent / name):
        if cand.is_dir():
            return cand
    raise PgRetentionError(f"pgretention resource directory {name!r} is missing from the installation")


def sql_files() -> list[Path]:
    base = resource_dir("sql")
    files = []
    for line in (base / "manifest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            files.append(base / line)
    return files


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resource_dir("migrations")))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@dataclass
class Report:
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cron: str = ""
    revision: str = ""
    notes: list[str] = field(default_factory=list)  # said on every run; not recorded as actions

    def add(self, text: str) -> None:
        self.actions.append(text)


def _one(conn: Conn, query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def installed_revision(conn: Conn) -> str | None:
    if _one(conn, "SELECT to_regclass('pgretention.alembic_version')") is None:
        return None
    return _one(conn, "SELECT version_num FROM pgretention.alembic_version")  # type: ignore[no-any-return]


def _check_server(conn: Conn) -> None:
    num = int(_one(conn, "SHOW server_version_num"))
    if num < MIN_SERVER:
        raise PgRetentionError(f"PostgreSQL {num // 10000} is not supported; pgretention needs 13 or newer")
    if _one(conn, "SELECT pg_is_in_recovery()"):
        raise PgRetentionError("the server is a standby (in recovery); install on the primary")


def _check_owner(conn: Conn, report: Report) -> None:
    """Who may install or upgrade (docs/install.md, "Who installs"): any role that can create what is
    missing, and it owns what it installs; into an existing pgretention, only its owner, or a superuser
    when the owner is a superuser too. A superuser replaying the SQL files into a schema that a lesser
    role owns would run code that role controls (triggers on its catalog tables) with superuser rights."""
    me, me_super = conn.execute("SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()  # type: ignore[misc]
    row = conn.execute(
        "SELECT n.nspowner::regrole::text, r.rolsuper FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner"
        " WHERE n.nspname = %s",
        [SCHEMA],
    ).fetchone()
    if row is not None:
        owner, owner_super = row
        if owner != me and not (me_super and owner_super):
            raise PermissionDenied(
                f"pgretention in this database is owned by role {owner}"
                + ("" if owner_super else ", which is not a superuser")
                + f"; role {me} may not install or upgrade it: connect as {owner}"
            )
    if not me_super:
        report.notes.append(
            f"installed as role {me}, which is not a superuser: pgretention acts with its rights and manages"
            f" only tables {me} may alter (its own, or those of roles it is a member of)"
        )


def _ensure_extension(
    conn: Conn, name: str, schema: str, report: Report, created: list[str], created_schemas: list[str]
) -> str:
    """Return the schema holding extension ``name``, creating it in ``schema`` when missing."""
    have = _one(
        conn,
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = %s",
        [name],
    )
    if have:
        return str(have)
    if _one(conn, "SELECT count(*) FROM pg_available_extensions WHERE name = %s", [name]) == 0:
        raise MissingExtension(
            f"extension {name} is not available on this server; install the package "
            f"(Debian: postgresql-<major>-{name.replace('pg_', '')}) and retry"
        )
    if _one(conn, "SELECT to_regnamespace(%s)", [schema]) is None:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        created_schemas.append(schema)
        report.add(f"created schema {schema}")
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("CREATE EXTENSION {} SCHEMA {}").format(sql.Identifier(name), sql.Identifier(schema))
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermissionDenied(
            f"role {_one(conn, 'SELECT current_user')} cannot create extension {name}: {first_line(exc)}; "
            f"ask a superuser to run CREATE EXTENSION {name} SCHEMA {schema}, then retry"
        ) from exc
    created.append(name)
    report.add(f"created extension {name} in schema {schema}")
    return schema


# Replayed first: the replay resolves every name with a fixed search_path (the rest of the install
# transaction too), so nothing in a schema a user can write to can capture it.
REPLAY_HEADER = "SET LOCAL search_path = pg_catalog, pg_temp"


def _run_sql_files(conn: Conn) -> None:
    """Replay ``sql/`` in manifest order; its last files drop the routines of an earlier release that
    the replay did not create (``cleanup.sql``) and grant."""
    conn.execute(REPLAY_HEADER)
    for path in sql_files():
        try:
            conn.execute(path.read_text().encode())
        except psycopg.Error as exc:
            raise PgRetentionError(f"{path.name}: {first_line(exc)}") from exc


def _run_reference_schema(conn: Conn, report: Report) -> None:
    """The optional reference schema (``sql/reference/*.sql``): tables and rules for new deployments."""
    count = "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace('crm')), " \
            "(SELECT count(*) FROM pgretention.entity_rule)"
    before = conn.execute(count).fetchone()
    for path in sorted((resource_dir("sql") / "reference").glob("*.sql")):
        try:
            conn.execute(path.read_text().encode())
        except psycopg.Error as exc:
            raise PgRetentionError(f"reference/{path.name}: {first_line(exc)}") from exc
    if conn.execute(count).fetchone() != before:
        report.add("created the reference schema crm (accounts, customers, consent proofs, leads) and its rules")


def _engine(dsn: str | None, timeout: str) -> Any:
    conninfo = build_conninfo(dsn)

    def creator() -> psycopg.Connection[Any]:
        return connect(conninfo, autocommit=False, statement_timeout=timeout)

    return create_engine("postgresql+psycopg://", creator=creator, poolclass=NullPool)


def install(
    dsn: str | None,
    *,
    with_cron: bool = True,
    cron_schedule: str | None = None,
    upgrade_only: bool = False,
    statement_timeout: str = "15min",
    reference_schema: bool = False,
    _revision: str = "head",
) -> Report:
    """Install or upgrade pgretention. Idempotent: a second run changes nothing.

    :raises NotInstalled: ``upgrade_only`` and pgretention is not installed.
    :raises MissingExtension: pg_partman or pgcrypto is not available on the server.
    :raises PermissionDenied: the role cannot create what is missing.
    """
    t0 = time.monotonic()
    report = Report()
    engine = _engine(dsn, statement_timeout)
    try:
        with engine.begin() as sa_conn:
            conn: Conn = sa_conn.connection.driver_connection
            _check_server(conn)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [INSTALL_LOCK])
            _check_owner(conn, report)
            before = installed_revision(conn)
            if upgrade_only and before is None:
                raise NotInstalled(f"pgretention is not installed in database {_one(conn, 'SELECT current_database()')}")
            created_ext: list[str] = []
            created_schemas: list[str] = []
            created_roles: list[str] = []
            for role in ROLES:
                if _one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]) == 0:
                    try:
                        with conn.transaction():
                            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                    except psycopg.errors.InsufficientPrivilege as exc:
                        raise PermissionDenied(
                            f"cannot create role {role}: {first_line(exc)}; a role with CREATEROLE must install"
                        ) from exc
                    created_roles.append(role)
                    report.add(f"created role {role}")
            if _one(conn, "SELECT to_regnamespace(%s)", [SCHEMA]) is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
                created_schemas.append(SCHEMA)
                report.add(f"created schema {SCHEMA}")
            partman_schema = _ensure_extension(
                conn, "pg_partman", PARTMAN_SCHEMA, report, created_ext, created_schemas
            )
            pgcrypto_schema = _ensure_extension(conn, "pgcrypto", SCHEMA, report, created_ext, created_schemas)

            cfg = alembic_config()
            cfg.attributes["connection"] = sa_conn
            command.upgrade(cfg, _revision)
            after = installed_revision(conn)
            report.revision = after or ""
            if _revision != "head":  # tests: leave a catalog as an older release left it
                conn.execute(
                    "INSERT INTO pgretention.installation (partman_schema, pgcrypto_schema, created_extensions,"
                    " created_schemas, created_roles) VALUES (%s, %s, %s, %s, %s)",
                    [partman_schema, pgcrypto_schema, created_ext, created_schemas, created_roles],
                )
                return report
            if before != after:
                report.add(f"catalog migrated {before or 'empty'} -> {after}")

            if before is None:
                conn.execute(
                    "INSERT INTO pgretention.installation (partman_schema, pgcrypto_schema,"
                    " created_extensions, created_schemas, created_roles) VALUES (%s, %s, %s, %s, %s)",
                    [partman_schema, pgcrypto_schema, created_ext, created_schemas, created_roles],
                )
            else:
                conn.execute(
                    "UPDATE pgretention.installation SET"
                    " created_extensions = created_extensions || %s::text[],"
                    " created_schemas = created_schemas || %s::text[],"
                    " created_roles = created_roles || %s::text[]"
                    " WHERE cardinality(%s::text[]) + cardinality(%s::text[]) + cardinality(%s::text[]) > 0",
                    [created_ext, created_schemas, created_roles] * 2,
                )
            _run_sql_files(conn)
            if reference_schema:
                _run_reference_schema(conn, report)
            if cron_schedule is not None:
                schedule.validate(cron_schedule)
                conn.execute(
                    "UPDATE pgretention.setting SET value = %s WHERE name = 'schedule' AND value <> %s",
                    [cron_schedule, cron_schedule],
                )
            sched = _one(conn, "SELECT value FROM pgretention.setting WHERE name = 'schedule'")
            gap = schedule.max_gap(sched)
            conn.execute(
                "UPDATE pgretention.setting SET value = %s WHERE name = 'schedule_max_gap' AND value <> %s",
                [gap, gap],
            )
            if before != after or report.actions:
                conn.execute(
                    "SELECT pgretention._audit(%s, %s, %s::jsonb)",
                    [
                        "install" if before is None else "upgrade",
                        "database",
                        psycopg.types.json.Jsonb(
                            {"from": before, "to": after, "package": __version__, "actions": report.actions}
                        ),
                    ],
                )
    except PgRetentionError:
        raise
    except psycopg.Error as exc:
        raise translate(exc) from exc
    except Exception as exc:  # SQLAlchemy / alembic wrap driver errors
        orig = getattr(exc, "orig", None)
        if isinstance(orig, psycopg.Error):
            raise translate(orig) from exc
        raise
    finally:
        engine.dispose()

    if with_cron:
        report.cron = schedule.ensure_job(dsn)
    else:
        report.cron = "pg_cron job not requested; run `pgretention run` from cron or a systemd timer"
    report.seconds = time.monotonic() - t0
    return report


def uninstall(dsn: str | None, *, keep_tables: bool = False) -> Report:
    """Remove everything pgretention created and nothing else.

    :param keep_tables: leave managed tables in place (as ordinary partitioned tables).
    :raises PgRetentionError: managed tables exist and ``keep_tables`` is false.
    """
    t0 = time.monotonic()
    report = Report()
    conn = connect(dsn)
    try:
        if installed_revision(conn) is None:
            raise NotInstalled(f"pgretention is not installed in database {_one(conn, 'SELECT current_database()')}")
        managed: list[str] = []
        if _one(conn, "SELECT to_regclass('pgretention.managed_table')") is not None:
            managed = [
                r[0]
                for r in conn.execute(
                    "SELECT format('%I.%I', table_schema, table_name) FROM pgretention.managed_table ORDER BY 1"
                )
            ]
        if managed and not keep_tables:
            raise InvalidInput(
                "managed tables exist: " + ", ".join(managed)
                + "; release them first (pgretention table release) or pass --keep-tables"
            )
        report.cron = schedule.remove_job(dsn)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [INSTALL_LOCK])
            row = conn.execute(
                "SELECT created_extensions, created_schemas, created_roles, partman_schema"
                " FROM pgretention.installation"
            ).fetchone()
            created_ext, created_schemas, created_roles, partman_schema = row if row else ([], [], [], None)
            if managed and partman_schema:
                # pg_partman keeps configuration rows and template tables for the class parents:
                # hand the tables back to plain PostgreSQL (their partitions stay).
                conn.execute(
                    "SELECT pgretention._forget_partman(ARRAY(SELECT format('%s.%s', parent_schema, parent_name)"
                    " FROM pgretention.retention_class))"
                )
                report.add(f"kept {len(managed)} managed tables as plain partitioned tables")
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))
            report.add(f"dropped schema {SCHEMA}")
            # the owners' executors (sql/core/exec.sql)
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(EXEC_SCHEMA)))
            for ext in created_ext:
                if ext == "pg_partman" and partman_schema:
                    others = _one(
                        conn,
                        sql.SQL("SELECT count(*) FROM {}.part_config").format(sql.Identifier(partman_schema)),
                    )
                    if others:
                        report.add(f"kept extension pg_partman: {others} partition sets of others use it")
                        continue
                if _one(conn, "SELECT count(*) FROM pg_extension WHERE extname = %s", [ext]):
                    conn.execute(sql.SQL("DROP EXTENSION {}").format(sql.Identifier(ext)))
                    report.add(f"dropped extension {ext}")
            for schema_name in created_schemas:
                if schema_name == SCHEMA or _one(conn, "SELECT to_regnamespace(%s)", [schema_name]) is None:
                    continue
                if _one(
                    conn,
                    "SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace(%s)",
                    [schema_name],
                ) == 0 and _one(
                    conn, "SELECT count(*) FROM pg_proc WHERE pronamespace = to_regnamespace(%s)", [schema_name]
                ) == 0:
                    conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(schema_name)))
                    report.add(f"dropped schema {schema_name}")
        for role in created_roles:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
                report.add(f"dropped role {role}")
            except psycopg.errors.DependentObjectsStillExist:
                report.add(f"kept role {role}: it holds privileges in another database")
    except psycopg.Error as exc:
        raise translate(exc) from exc
    finally:
        conn.close()
    report.seconds = time.monotonic() - t0
    return report


def version_info(dsn: str | None) -> dict[str, str | None]:
    info: dict[str, str | None] = {"package": __version__, "catalog_head": head_revision()}
    conn = connect(dsn)
    try:
        info["server"] = str(_one(conn, "SHOW server_version"))
        info["catalog"] = installed_revision(conn)
        for name, ver in conn.execute(
            "SELECT extname, extversion FROM pg_extension WHERE extname IN ('pg_partman','pgcrypto','pg_cron')"
        ):
            info[name] = ver
        info["pg_cron_database"] = _one(conn, "SELECT current_setting('cron.database_name', true)")
    except psycopg.Error as exc:
        raise translate(exc) from exc
    finally:
        conn.close()
    return info


__all__ = ["install", "uninstall", "version_info", "ConnectionFailed"]


@dataclass
class Missing:
    """One thing the connecting role lacks to install and run pgretention, and how to give it."""

    what: str
    fix: str  # SQL to run as the role named in ``by``, or what to do
    by: str = "a superuser"


def preflight(dsn: str | None, *, tables: tuple[str, ...] = ()) -> list[Missing]:
    """What the connecting role lacks to install pgretention here and to act on ``tables`` (the
    tables it is to manage): an empty list when it may go ahead. Reads only; changes nothing.
    For hosted PostgreSQL without a superuser (docs/install.md, "Without a superuser")."""
    conn = connect(dsn)
    try:
        _check_server(conn)
        me, me_super, createrole = conn.execute(
            "SELECT rolname::text, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()  # type: ignore[misc]
        dbname = str(_one(conn, "SELECT current_database()"))
        ident = sql.Identifier
        out: list[Missing] = []

        def grant(what: str, stmt: sql.Composable, by: str = "a superuser") -> None:
            out.append(Missing(what, stmt.as_string(conn), by))

        owner = _one(conn, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", [SCHEMA])
        if owner is not None and owner != me:
            out.append(Missing(f"schema {SCHEMA} exists and belongs to role {owner}",
                               f"connect as {owner} to upgrade it, or drop it after a look at what is in it",
                               owner))
        if not me_super and owner is None and not _one(conn, "SELECT has_database_privilege(current_database(), 'CREATE')"):
            grant(f"CREATE on database {dbname} (for schemas {SCHEMA} and {EXEC_SCHEMA})",
                  sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(ident(dbname), ident(me)), "the database owner")
        if not me_super and not createrole:
            for role in ROLES:
                if _one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]) == 0:
                    grant(f"role {role}", sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(role)), "a role with CREATEROLE")
        for ext in ("pgcrypto", "pg_partman"):
            row = conn.execute("SELECT n.nspname::text, e.extversion FROM pg_extension e"
                               " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s", [ext]).fetchone()
            if row is not None:
                schema = row[0]
                if ext == "pg_partman" and not me_super:
                    # what pg_partman's own docs give a role that runs it without being a superuser:
                    # its schema (4.x creates template tables there) and its configuration tables
                    schema_ok = _one(conn, "SELECT has_schema_privilege(%s, 'USAGE')"
                                           " AND has_schema_privilege(%s, 'CREATE')", [schema, schema])
                    if not schema_ok:
                        grant(f"USAGE and CREATE on schema {schema} (pg_partman creates template tables there)",
                              sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(ident(schema), ident(me)))
                    if not schema_ok or _one(
                            conn, "SELECT bool_or(NOT has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE'))"
                                  " FROM pg_class c WHERE c.relnamespace = to_regnamespace(%s)"
                                  " AND c.relname IN ('part_config', 'part_config_sub')", [schema]):
                        grant(f"pg_partman's configuration tables ({schema}.part_config, part_config_sub)",
                              sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
                                  ident(schema), ident(me)))
                continue
            avail = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = %s", [ext]).fetchone()
            if avail is None:
                out.append(Missing(f"extension {ext} is not available on the server",
                                   f"install the server package that ships {ext}", "the server's administrator"))
                continue
            needs_super = _one(conn, "SELECT bool_or(superuser AND NOT trusted) FROM pg_available_extension_versions"
                                     " WHERE name = %s AND version = %s", [ext, avail[0]])
            if needs_super and not me_super:
                target = PARTMAN_SCHEMA if ext == "pg_partman" else SCHEMA
                grant(f"extension {ext} {avail[0]} needs a superuser to create",
                      sql.SQL("CREATE SCHEMA IF NOT EXISTS {s}; CREATE EXTENSION {e} SCHEMA {s}").format(
                          s=ident(target), e=ident(ext)))
        try:  # pg_cron loaded: its job's database is a setting only some roles may read
            with conn.transaction():
                conn.execute("SHOW cron.database_name")
        except psycopg.errors.InsufficientPrivilege:
            grant("reading cron.database_name (to schedule and remove the pg_cron job)",
                  sql.SQL("GRANT pg_read_all_settings TO {}").format(ident(me)))
        except psycopg.errors.UndefinedObject:
            pass  # no pg_cron: install says how to schedule runs without it
        for table in tables:
            schema_name, _, rel_name = table.rpartition(".")
            # by name in the catalog: the role may not have USAGE on the table's schema (yet)
            row = conn.execute("SELECT format('%%I.%%I', n.nspname, c.relname), pg_get_userbyid(c.relowner)::text,"
                               " pg_has_role(c.relowner, 'MEMBER') FROM pg_class c"
                               " JOIN pg_namespace n ON n.oid = c.relnamespace"
                               " WHERE n.nspname = %s AND c.relname = %s", [schema_name or "public", rel_name]).fetchone()
            if row is None:
                out.append(Missing(f"table {table} does not exist", "check the name", "you"))
            elif not me_super:
                if not row[2]:
                    grant(f"acting as {row[1]}, the owner of {row[0]} (pgretention runs its statements with the"
                          " owner's rights)", sql.SQL("GRANT {} TO {}").format(ident(row[1]), ident(me)))
                partman = _one(conn, "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_partman'")
                if partman and not _one(conn, "SELECT has_schema_privilege(%s, %s, 'CREATE')", [row[1], partman]):
                    # pg_partman gives the table's template table (in its schema) to the table's owner
                    grant(f"CREATE on schema {partman} for {row[1]} (pg_partman gives it the template table of {row[0]})",
                          sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(ident(partman), ident(row[1])))
        return out
    except psycopg.Error as exc:
        raise translate(exc) from exc
    finally:
        conn.close()
