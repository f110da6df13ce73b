"""Property tests of the console script: hostile table names, identifiers and intervals.

Each example runs the real ``python -m pgretention`` (through ``DB.cli``) with a generated value in
the place of a table name, a column name or an interval, and checks what docs/install.md promises:
exit code 6 (invalid input; nothing was changed), one line on stderr that names the bad value, no
traceback, and a database whose catalog and pgretention's own rows are exactly as before.
test_validation_properties.py does the same for the SQL validators.

A CLI process costs about a second (imports), so examples are few; each example runs its value
through two subcommands at once. Generated text leaves out NUL (no argv can carry it), lone
surrogates (bytes that are not UTF-8) and line-break characters (shown escaped in the one-line
error, so not verbatim): those three cases are the explicit tests at the end.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from subprocess import CompletedProcess
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pgretention.cluster import Server
from tests.fix_catalog import diff, snapshot
from tests.fix_db import DB

# what str.splitlines() treats as line boundaries, and what argv cannot carry
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters=LINE_BREAKS + "\x00"), max_size=30)
BAD_CHARS = ["'", '"', ";", "\\", "\t", "\x01", "\x1b", "\x7f"]
RESERVED = ["select", "order", "user", "from", "table", "public.select", "pg_catalog.pg_class", "information_schema",
            "Ünïcødé", "名前", "😀", "-x", "--", "a b", "x.y", ".", "public.", ".x", "", " ", "a.b.c",
            "'; DROP TABLE cdr; --", "cdr; DROP TABLE plain", "public.\"cdr\"", 'x"y', "a\\b", "%s", "%I", "$1"]

# any name a table might be given: none of these names a table that exists in the test database
NAMES = st.one_of(
    TEXT,
    st.sampled_from(RESERVED),
    st.builds(lambda a, bad, b: a + bad + b, TEXT, st.sampled_from(BAD_CHARS), TEXT),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters=LINE_BREAKS + "\x00."),
            min_size=64, max_size=90),
    st.builds(lambda n: "ü" * n, st.integers(32, 40)),  # 64 bytes and more in few characters
)
# identifiers that can never be valid: a forbidden character, too long, empty
BAD_IDENTS = st.one_of(
    st.builds(lambda a, bad, b: a + bad + b, TEXT, st.sampled_from(BAD_CHARS), TEXT),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters=LINE_BREAKS + "\x00."),
            min_size=64, max_size=90).filter(lambda s: len(s.encode()) > 63),
    st.just(""),
)
UNITS = st.sampled_from(["second", "minutes", "hours", "day", "days", "weeks", "mon", "months", "years", "decades"])
INTERVALS = st.one_of(
    st.builds(lambda n, u: f"-{n} {u}", st.integers(1, 10**9), UNITS),
    st.sampled_from(["0", "0 days", "-0 days", "00:00:00", "1 day -24 hours", "1 mon -30 days", "P0D", "-P1D"]),
    st.builds(lambda n, u: f"{n} {u}", st.integers(201, 10**15), st.sampled_from(["years", "decades", "centuries"])),
    st.sampled_from(["1e308 days", "99999999 years", "infinity", "-infinity", "1 day; DROP TABLE cdr",
                     "1 day' OR '1'='1", "1 day)--", "banana", "soon", "13 moons", "1 fortnight", "∞", "1 dаy"]),
    TEXT,
)


@pytest.fixture(scope="module")
def cli_db(server: Server) -> Iterator[DB]:
    """One database for the module: a managed table, a plain table with a key, no other tables."""
    from pgretention import installer

    name = server.create_database(prefix="cliprop")
    installer.install(server.conninfo(name), with_cron=False)
    db = DB(server, name)
    db.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz NOT NULL, caller text',"
               " 'started_at', '1 day', '{\"all\": {\"drop_after\": \"400 days\", \"anonymise_after\": \"30 days\"}}')")
    db.execute("CREATE TABLE public.plain (id int PRIMARY KEY, t timestamptz NOT NULL, caller text)")
    db.execute("INSERT INTO public.plain SELECT g, now() - g * interval '1 hour', '+31' || g FROM generate_series(1, 50) g")
    yield db
    server.drop_database(name)


@pytest.fixture(scope="module")
def checker(cli_db: DB) -> Iterator[psycopg.Connection[Any]]:
    with cli_db.connect() as conn:
        yield conn


ROWS = {t: f"SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM pgretention.{t} x"  # noqa: S608
        for t in ("managed_table", "retention_class", "class_member", "anon_rule", "rollup", "entity_rule",
                  "subject_table", "subject_column", "legal_hold", "adoption", "setting", "partition_op", "anon_op")}


def _state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The catalog, pgretention's own rows, and the audit log's end."""
    state: dict[str, Any] = {"catalog": snapshot(conn)}
    for table, query in ROWS.items():
        state[table] = conn.execute(query).fetchone()
    state["audit"] = conn.execute("SELECT count(*), max(id) FROM pgretention.audit_log").fetchone()
    state["plain"] = conn.execute("SELECT count(*) FROM public.plain").fetchone()
    return state


def _unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert diff(before["catalog"], after["catalog"]) == {}
    for key in before:
        if key != "catalog":
            assert after[key] == before[key], key


# the characters pgretention shows as <U+XXXX> in an error (control, invisible, direction-changing:
# pgretention._hidden_chars in sql/core/names.sql)
HIDDEN = re.compile("[\u0001-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
                    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
                    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")


def _renderings(value: str) -> set[str]:
    """How an error may quote a value: as given, SQL-quoted (quote_literal, E'' form), Python repr,
    or with its hidden characters as <U+XXXX>."""
    sql_quoted = value.replace("'", "''")
    visible = HIDDEN.sub(lambda m: f"<U+{ord(m.group()):04X}>", value)
    visible_quoted = visible.replace("'", "''")
    return {value, sql_quoted, sql_quoted.replace("\\", "\\\\"), repr(value)[1:-1], visible, visible_quoted,
            visible_quoted.replace("\\", "\\\\")}


def _names(line: str, value: str, *, table_name: bool = False) -> bool:
    """The error line names the bad value (or, for a table name, its offending part)."""
    plain = line.replace('"', "")  # quote_ident's quotes around schema and table names
    candidates = {value}
    parts = value.split(".")
    if table_name and len(parts) == 2:
        candidates |= {p for p in parts if len(p.encode()) > 63}
    if any(p == "" for p in parts) or value.strip(" ") == "":
        if "must not be empty" in line or "must be given" in line:
            return True
    return any(r in line or r in plain for c in candidates for r in _renderings(c))


def _refused(res: CompletedProcess[str], value: str, *, table_name: bool = False) -> None:
    what = f"{res.args[4:]!r}: exit {res.returncode}, stderr {res.stderr!r}"
    assert res.returncode == 6, what
    assert "Traceback" not in res.stderr, what
    assert res.stderr.startswith("pgretention: error: ") and res.stderr.endswith("\n"), what
    assert res.stderr.count("\n") == 1, what
    assert _names(res.stderr, value, table_name=table_name), what
    assert res.stdout == "", what


def _run_pair(db: DB, commands: list[list[str]]) -> list[CompletedProcess[str]]:
    """Run the console script with each argument list, at the same time."""
    results: list[CompletedProcess[str] | None] = [None] * len(commands)

    def one(i: int) -> None:
        results[i] = db.cli(*commands[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(commands))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


# -- table names: commands about an existing table, given a name that is no table of this database ---
NAME_COMMANDS: list[Callable[[str], list[str]]] = [
    lambda n: ["adopt", "--time-column=t", "--drop-after=1 year", "--key=local", "--", n],
    lambda n: ["anonymise", "rule", "--", n, "caller", "pseudonym"],
    lambda n: ["class", "set", "--drop-after=1 year", "--", n, "all"],
    lambda n: ["hold", "set", "--reason=order", "--reference=R-1", f"--table={n}", "--from=2020-01-01"],
    lambda n: ["subject", "register", "--column=caller=phone", "--", n],
    lambda n: ["entity", "rule", "create", "r1", f"--table={n}", '--activity=[{"column": "t"}]', "--period=1 year"],
    lambda n: ["assign", "--", n, "NL", "all"],
    lambda n: ["table", "release", "--", n],
    lambda n: ["tune", "--", n],
    lambda n: ["rollup", "add", "--group=caller", "--measure=n=count", "--", n, "daily"],
]
EXISTING = {"cdr", "public.cdr", "plain", "public.plain"}


@settings(max_examples=7, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, pair=st.lists(st.sampled_from(range(len(NAME_COMMANDS))), min_size=2, max_size=2, unique=True))
@example(name="'; DROP TABLE cdr; --", pair=[0, 5])
@example(name="pg_catalog.pg_class", pair=[3, 9])
def test_hostile_table_names_are_refused(cli_db: DB, checker: psycopg.Connection[Any], name: str,
                                         pair: list[int]) -> None:
    if name in EXISTING:
        return
    before = _state(checker)
    for res in _run_pair(cli_db, [NAME_COMMANDS[i](name) for i in pair]):
        _refused(res, name, table_name=True)
    _unchanged(before, _state(checker))


# -- identifiers of a new table: name, time column, class column, a column of the column list --------
CREATE_COMMANDS: list[Callable[[str], list[str]]] = [
    lambda v: ["table", "create", "--columns=id bigint, t timestamptz NOT NULL", "--time-column=t", "--class=all:1 year",
               "--", v],
    lambda v: ["table", "create", "--columns=id bigint, t timestamptz NOT NULL", f"--time-column={v}",
               "--class=all:1 year", "--", "newtab"],
    lambda v: ["table", "create", "--columns=id bigint, region text, t timestamptz NOT NULL", "--time-column=t",
               f"--class-column={v}", "--class=all:1 year", "--", "newtab"],
    lambda v: ["anonymise", "rule", "--", "public.cdr", v, "null"],
    lambda v: ["adopt", f"--time-column={v}", "--drop-after=1 year", "--key=local", "--", "plain"],
]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ident=BAD_IDENTS, pair=st.lists(st.sampled_from(range(len(CREATE_COMMANDS))), min_size=2, max_size=2, unique=True))
@example(ident='started_at"; DROP TABLE cdr; --', pair=[1, 3])
def test_invalid_identifiers_are_refused(cli_db: DB, checker: psycopg.Connection[Any], ident: str,
                                         pair: list[int]) -> None:
    before = _state(checker)
    for i, res in zip(pair, _run_pair(cli_db, [CREATE_COMMANDS[i](ident) for i in pair]), strict=True):
        _refused(res, ident, table_name=i == 0)
    _unchanged(before, _state(checker))
    assert checker.execute("SELECT to_regclass('public.newtab')").fetchone() == (None,)


# -- intervals: partition interval, drop_after, anonymise_after, adoption, entity periods --------------
INTERVAL_COMMANDS: list[Callable[[str], list[str]]] = [
    lambda x: ["table", "create", "--columns=id bigint, t timestamptz NOT NULL", "--time-column=t", f"--interval={x}",
               "--class=all:1 year", "--", "newtab"],
    lambda x: ["class", "set", f"--drop-after={x}", "--", "public.cdr", "all"],
    lambda x: ["class", "set", "--drop-after=400 days", f"--anonymise-after={x}", "--", "public.cdr", "all"],
    lambda x: ["adopt", "--time-column=t", f"--drop-after={x}", "--key=local", "--", "plain"],
    lambda x: ["adopt", "--time-column=t", "--drop-after=1 year", f"--interval={x}", "--key=local", "--", "plain"],
    lambda x: ["entity", "rule", "create", "r1", "--table=public.plain", '--activity=[{"column": "t"}]', f"--period={x}"],
    lambda x: ["entity", "rule", "create", "r1", "--table=public.plain", '--activity=[{"column": "t"}]', "--period=1 year",
               f"--notice={x}"],
]


def _valid_interval(conn: psycopg.Connection[Any], value: str) -> bool:
    try:
        with conn.transaction():
            row = conn.execute("SELECT %s::interval > interval '0' AND %s::interval <= interval '200 years'",
                               [value, value]).fetchone()
    except psycopg.DataError:
        return False
    return bool(row and row[0])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=INTERVALS, pair=st.lists(st.sampled_from(range(len(INTERVAL_COMMANDS))), min_size=2, max_size=2, unique=True))
@example(value="-1 day", pair=[0, 5])
@example(value="1e308 days", pair=[1, 4])
def test_bad_intervals_are_refused(cli_db: DB, checker: psycopg.Connection[Any], value: str, pair: list[int]) -> None:
    if _valid_interval(checker, value):
        return  # a positive interval of at most 200 years is a legitimate value
    before = _state(checker)
    for res in _run_pair(cli_db, [INTERVAL_COMMANDS[i](value) for i in pair]):
        _refused(res, value)
    _unchanged(before, _state(checker))


# -- what the generators leave out ---------------------------------------------------------------------
def test_nul_byte_cannot_reach_the_database(cli_db: DB) -> None:
    """No argv can carry NUL: the operating system refuses before pgretention runs."""
    with pytest.raises(ValueError, match="null byte"):
        cli_db.cli("tune", "--", "cdr\x00; DROP TABLE plain")


@pytest.mark.parametrize("brk", ["\n", "\r", "\u2028"], ids=["LF", "CR", "U+2028"])
def test_line_break_in_a_name_gives_a_whole_one_line_error(cli_db: DB, checker: psycopg.Connection[Any],
                                                            brk: str) -> None:
    name = f"calls{brk}tail_part"
    before = _state(checker)
    res = cli_db.cli("adopt", "--time-column=t", "--drop-after=1 year", "--", name)
    assert res.returncode == 6 and "Traceback" not in res.stderr
    _unchanged(before, _state(checker))
    assert res.stderr.count("\n") == 1, res.stderr
    assert "tail_part" in res.stderr, res.stderr
    assert "not allowed" in res.stderr or "does not exist" in res.stderr, res.stderr


def test_argument_that_is_not_utf8_gives_a_one_line_error(cli_db: DB, checker: psycopg.Connection[Any]) -> None:
    before = _state(checker)
    res = cli_db.cli("tune", "--", "M\udcfcller")  # the byte 0xfc: "Müller" typed in Latin-1
    _unchanged(before, _state(checker))
    assert res.returncode == 6, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("pgretention: error: ") and res.stderr.count("\n") == 1, res.stderr
