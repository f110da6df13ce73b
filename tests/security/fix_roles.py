"""The attacker's cast of the security review, logged in as themselves, and the review's test data.

``actors`` (fixture, needs ``installed``) creates in the cluster, with names unique to the test:

- ``adm``      LOGIN, member of pgretention_admin
- ``op``       LOGIN, member of pgretention_operator
- ``aud``      LOGIN, member of pgretention_auditor
- ``evil``     LOGIN, no other rights
- ``appowner`` LOGIN, owns schema ``app`` (and whatever it creates there), no other rights
- ``dbown``    LOGIN, owner of the test database: only after ``actors.add_dbowner()``

Each role has a password and ``actors.connect(kind)`` is a real login as that role (over TCP with
password authentication on the local throwaway cluster), never SET ROLE. Teardown strips
SUPERUSER from every one of them (an attack that succeeded leaves one behind), drops what they own
in the test database and drops the roles, so no role leaks into the next test.

The builders below create the review's common data (README's ``public.cdr`` with classes, a
subject table, entity rules on app tables), each as small as the tests need. Setup runs as the
installing role (the superuser of the test server), never as an attacker.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.fix_db import DB

KINDS = ("adm", "op", "aud", "evil", "appowner")
MEMBERSHIP = {"adm": "pgretention_admin", "op": "pgretention_operator", "aud": "pgretention_auditor"}
PASSWORD = "sec-review-pw"
PREFIX = "sec_"

# A payload an attacker plants: if it runs with superuser rights, it makes ``who`` a superuser.
# ``who`` is a SQL expression naming the role (evaluated where the payload runs).
PAYLOAD_BODY = (
    "BEGIN\n"
    "  IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN\n"
    "    EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', {who});\n"
    "  END IF;\n"
    "  RETURN {ret};\n"
    "END"
)


def require(condition: object, what: str) -> None:
    """A precondition of the scenario, not the attack's outcome. It fails the test loudly, also
    under ``xfail(raises=AssertionError)``: a scenario that no longer sets up (the API changed) must
    be updated, not counted as a refused attack."""
    if not condition:
        pytest.fail(f"scenario precondition failed: {what}")


def payload(who: str, ret: str = "true") -> str:
    """plpgsql body (without dollar quotes) of an escalation payload."""
    return PAYLOAD_BODY.format(who=who, ret=ret)


@dataclass
class Outcome:
    """What an attack statement returned, or the error it raised."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: psycopg.Error | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {str(self.error).splitlines()[0]}"
        return f"returned {self.rows[:5]!r}{' ...' if len(self.rows) > 5 else ''}"


def attempt(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> Outcome:
    """Run one attack statement; a psycopg error is caught and returned, never raised.

    The connection should be in autocommit mode so that a refused step leaves it usable.
    """
    try:
        cur = conn.execute(query, params)
        rows = cur.fetchall() if cur.description is not None else []
        return Outcome(rows=rows)
    except psycopg.Error as exc:
        if not conn.autocommit and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        return Outcome(error=exc)


class Actors:
    """The roles of one test and how to log in as each of them."""

    def __init__(self, db: DB) -> None:
        self.db = db
        self.tag = uuid.uuid4().hex[:6]
        self.names: dict[str, str] = {}
        self._dbowner = False

    # -- names and logins -------------------------------------------------------------------
    def name(self, kind: str) -> str:
        return self.names[kind]

    def __getitem__(self, kind: str) -> str:
        return self.names[kind]

    def dsn(self, kind: str, **extra: str) -> str:
        """A connection string that logs in as the role with its password."""
        srv = self.db.server
        user = self.names[kind]
        if srv.cluster is not None:
            return srv.cluster.tcp_conninfo(self.db.name, user=user, password=PASSWORD, **extra)
        return srv.conninfo(self.db.name, user=user, password=PASSWORD, **extra)

    def connect(self, kind: str, **kw: Any) -> psycopg.Connection[Any]:
        """A real login as the role (autocommit unless told otherwise)."""
        kw.setdefault("autocommit", True)
        conn = psycopg.connect(self.dsn(kind), **kw)
        who = conn.execute("SELECT session_user::text").fetchone()
        require(who is not None and who[0] == self.names[kind], f"login as {self.names[kind]}")
        return conn

    # -- setup --------------------------------------------------------------------------------
    def _create(self, kind: str) -> str:
        name = f"{PREFIX}{self.tag}_{kind}"
        self.db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(PASSWORD)))
        self.names[kind] = name
        return name

    def create_all(self) -> None:
        for kind in KINDS:
            self._create(kind)
        for kind, group in MEMBERSHIP.items():
            self.db.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(self.names[kind])))
        self.db.execute(sql.SQL("CREATE SCHEMA app AUTHORIZATION {}").format(sql.Identifier(self.names["appowner"])))

    def add_dbowner(self) -> str:
        """``dbown``: a login role that owns the test database (typical: the application's role)."""
        name = self._create("dbown")
        self.db.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(self.db.name), sql.Identifier(name)))
        self._dbowner = True
        return name

    # -- what the tests measure ---------------------------------------------------------------
    def superusers(self) -> list[str]:
        """The roles of this test that are superusers now (an attack that worked leaves one)."""
        return [r[0] for r in self.db.all("SELECT rolname::text FROM pg_roles WHERE rolsuper AND rolname = ANY(%s)"
                                          " ORDER BY 1", [list(self.names.values())])]

    def is_superuser(self, kind: str) -> bool:
        return bool(self.db.one("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [self.names[kind]]))

    # -- teardown -----------------------------------------------------------------------------
    def cleanup(self) -> None:
        roles = list(self.names.values())
        if not roles:
            return
        drop_roles(self.db, roles, dbowner=self._dbowner)


def drop_roles(db: DB, roles: Sequence[str], *, dbowner: bool = False) -> None:
    """Strip SUPERUSER, end sessions, drop owned objects in the test database, drop the roles."""
    with db.server.admin() as conn:
        for role in roles:
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER NOBYPASSRLS").format(sql.Identifier(role)))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)"
                     " AND pid <> pg_backend_pid()", [list(roles)])
    if dbowner:
        with contextlib.suppress(psycopg.Error):
            db.execute(sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(db.name)))
    with contextlib.suppress(psycopg.Error), db.connect() as conn:
        for role in roles:
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
    with db.server.admin() as conn:
        for role in roles:
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def actors(installed: DB) -> Iterator[Actors]:
    a = Actors(installed)
    try:
        a.create_all()
        yield a
    finally:
        a.cleanup()


# ---------------------------------------------------------------------------------------------
# The review's test data. Every builder runs as the installing role and returns what the
# attacks need (ids, names); none of them grants an attacker anything.
# ---------------------------------------------------------------------------------------------

CDR_COLUMNS = "id bigint, region text, started_at timestamptz, caller text, callee text, duration_s int"
CDR_CLASSES = {
    "eu": {"drop_after": "6 months", "members": ["NL", "DE"]},
    "sms": {"drop_after": "13 months", "members": ["SMS"]},
    "intl": {"drop_after": "24 months"},
}
REGIONS = ("NL", "DE", "SMS", "US", "FR")


def phone(n: int) -> str:
    return f"+3161234{n:04d}"


def make_cdr(db: DB, *, months: int = 3, rows: int = 600, interval: str = "1 month", premake: int = 4,
             classes: dict[str, Any] | None = None, subject: bool = False) -> int:
    """README's ``public.cdr``: classes eu (6 months, NL, DE) / sms (13 months) / intl (24 months,
    default), partitioned by time per class, ``rows`` calls spread evenly over the last ``months``
    months (caller ``phone(i % 1000)``, callee ``phone((i + 1) % 1000)``). With ``subject`` the table
    is registered for subject requests (caller, callee = phone). Returns the managed table id."""
    tid = db.one(
        "SELECT pgretention.table_create('public.cdr', %s, 'started_at', %s, %s, p_class_column => 'region',"
        " p_default_class => 'intl', p_premake => %s, p_start => now() - %s::interval)",
        [CDR_COLUMNS, interval, Jsonb(classes or CDR_CLASSES), premake, f"{months} months"],
    )
    db.execute(
        "INSERT INTO public.cdr SELECT g, (%s::text[])[1 + g %% 5],"
        " now() - (%s::interval * g / %s) + interval '1 minute',"
        " '+3161234' || lpad((g %% 1000)::text, 4, '0'), '+3161234' || lpad(((g + 1) %% 1000)::text, 4, '0'), g %% 600"
        " FROM generate_series(0, %s - 1) g",
        [list(REGIONS), f"{months} months", rows, rows],
    )
    if subject:
        db.execute("SELECT pgretention.subject_table_register('public.cdr', '{\"caller\": \"phone\", \"callee\": \"phone\"}')")
    return int(tid)


def make_sms_log(db: DB, *, default_rows: int = 500, days_back: int = 10, premake: int = 4,
                 anonymise_after: str | None = None) -> int:
    """``public.sms_log`` (daily partitions, one class ``default`` kept 90 days, partitions from
    ``days_back`` days ago) with ``default_rows`` rows older than the first partition, within their
    90 days, so they sit in the default partition. Returns the managed table id."""
    cls: dict[str, Any] = {"drop_after": "90 days"}
    if anonymise_after is not None:
        cls["anonymise_after"] = anonymise_after
    tid = db.one(
        "SELECT pgretention.table_create('public.sms_log', 'id bigint, sent_at timestamptz, sender text, body text',"
        " 'sent_at', '1 day', %s, p_premake => %s, p_start => now() - %s::interval)",
        [Jsonb({"default": cls}), premake, f"{days_back} days"],
    )
    if default_rows:
        db.execute(
            "INSERT INTO public.sms_log SELECT g, date_trunc('day', now()) - %s::interval - g * interval '1 minute',"
            " '+3161234' || lpad((g %% 1000)::text, 4, '0'), 'hello ' || g FROM generate_series(1, %s) g",
            [f"{days_back + 5} days", default_rows],
        )
    return int(tid)


def leaves(db: DB, table: str) -> list[tuple[str, str]]:
    """(leaf, partition bound) of every leaf partition under a table, oldest bound first."""
    return [(r[0], r[1]) for r in db.all(
        "SELECT t.relid::regclass::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_partition_tree(%s::regclass) t"
        " JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf ORDER BY 2", [table])]


def make_app_tables(actors: Actors, *, accounts: int = 30, leads: int = 20, due_leads: int = 10) -> None:
    """As ``appowner``: ``app.account`` (last login yesterday), ``app.contact`` (2 per account),
    ``app.lead`` (``due_leads`` created 3 years ago, the rest last month). No rules."""
    with actors.connect("appowner") as own:
        own.execute(
            "CREATE TABLE app.account (id bigint PRIMARY KEY, email text, last_login_at timestamptz);"
            "CREATE TABLE app.contact (id bigserial PRIMARY KEY, account_id bigint REFERENCES app.account, email text);"
            "CREATE TABLE app.lead (id bigint PRIMARY KEY, email text, created_at timestamptz)")
        own.execute("INSERT INTO app.account SELECT g, 'acc' || g || '@example.org', now() - interval '1 day'"
                    " FROM generate_series(1, %s) g", [accounts])
        own.execute("INSERT INTO app.contact (account_id, email) SELECT a.id, 'c' || a.id || '-' || k || '@example.org'"
                    " FROM app.account a CROSS JOIN generate_series(1, 2) k")
        own.execute("INSERT INTO app.lead SELECT g, 'l' || g || '@x.nl',"
                    " CASE WHEN g <= %s THEN now() - interval '3 years' ELSE now() - interval '1 month' END"
                    " FROM generate_series(1, %s) g", [due_leads, leads])


LEADS_RULE = ("SELECT pgretention.entity_rule_create('leads', 'app.lead', 'id', '[{\"column\": \"created_at\"}]',"
              " '2 years')")


def make_app_entities(actors: Actors, *, accounts: int = 30, leads: int = 20, due_leads: int = 10) -> dict[str, int]:
    """``make_app_tables``, then, as the installing role, entity rules ``accounts`` (24 months,
    notice 30 days, dependant app.contact) and ``leads`` (2 years). Returns the rule ids."""
    make_app_tables(actors, accounts=accounts, leads=leads, due_leads=due_leads)
    db = actors.db
    acc = db.one("SELECT pgretention.entity_rule_create('accounts', 'app.account', 'id', '[{\"column\": \"last_login_at\"}]',"
                 " '24 months', p_dependants => '[{\"table\": \"app.contact\", \"fk\": \"account_id\"}]',"
                 " p_notice_period => '30 days')")
    lead = db.one(LEADS_RULE)
    return {"accounts": int(acc), "leads": int(lead)}


def make_app_events(actors: Actors, *, rows: int = 200, days: int = 20) -> None:
    """As ``appowner``: plain table ``app.events`` (primary key, ``at``) with ``rows`` rows over the
    last ``days`` days."""
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.events (id int PRIMARY KEY, at timestamptz NOT NULL, kind text)")
        own.execute("INSERT INTO app.events SELECT g, now() - %s::interval * g / %s, 'k' || g %% 3"
                    " FROM generate_series(1, %s) g", [f"{days} days", rows, rows])


def audit_ids(db: DB) -> list[int]:
    return [int(r[0]) for r in db.all("SELECT id FROM pgretention.audit_log ORDER BY id")]


def verify_audit(db: DB) -> tuple[bool, str | None]:
    row = db.all("SELECT ok, reason FROM pgretention.audit_verify()")[0]
    return bool(row[0]), row[1]


def drop_newest_leaf(db: DB, table: str) -> str:
    """Drop the leaf partition with the latest upper bound (as if premaking were due again)."""
    row = db.all(
        "SELECT t.relid::regclass::text FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid"
        " CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)') m"
        " WHERE t.isleaf AND m IS NOT NULL ORDER BY m[1]::timestamptz DESC LIMIT 1", [table])
    leaf = str(row[0][0])
    db.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(leaf)))
    return leaf


def give_table(db: DB, table: str, owner: str) -> None:
    """Make ``owner`` the owner of a table and of every partition under it (the application owns its data)."""
    for (rel,) in db.all("SELECT relid::regclass::text FROM pg_partition_tree(%s::regclass)", [table]):
        db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(rel), sql.Identifier(owner)))


def make_ledger(actors: Actors, *, rows: int = 100, days_ago: int = 10) -> str:
    """As ``appowner``: ``app.ledger`` RANGE-partitioned on ``at`` with one partition
    ``app.ledger_old`` (``days_ago`` to ``days_ago - 5`` days ago) holding ``rows`` rows. Not managed.
    Returns the partition's bounds' lower end as text."""
    lo, hi = actors.db.all("SELECT (date_trunc('day', now()) - %s::interval)::text,"
                           " (date_trunc('day', now()) - %s::interval)::text",
                           [f"{days_ago} days", f"{days_ago - 5} days"])[0]
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.ledger (id int, at timestamptz NOT NULL, amount numeric) PARTITION BY RANGE (at)")
        own.execute(sql.SQL("CREATE TABLE app.ledger_old PARTITION OF app.ledger FOR VALUES FROM ({}) TO ({})")
                    .format(sql.Literal(lo), sql.Literal(hi)))
        own.execute("INSERT INTO app.ledger SELECT g, %s::timestamptz + g * interval '1 minute', g FROM generate_series(1, %s) g",
                    [lo, rows])
    return str(lo)


def class_leaves(db: DB, table: str, member: str) -> list[str]:
    """Leaf partitions (not the default one) of the class partition that holds ``member``."""
    parent = db.one(
        "SELECT t.relid::regclass::text FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid"
        " WHERE NOT t.isleaf AND t.level = 1 AND pg_get_expr(c.relpartbound, c.oid) LIKE %s", [table, f"%'{member}'%"])
    return [r[0] for r in db.all(
        "SELECT t.relid::regclass::text FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid"
        " WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' ORDER BY 1", [parent])]
