"""Realistic test data for communications logs: call detail records, SMS and e-mail logs.

Rows are generated on the server by ``INSERT ... SELECT`` over ``generate_series``: nothing crosses
the network but the statement, which is what makes 350k rows per second and CPU core possible (a
client relaying the rows into ``COPY ... FROM STDIN`` was measured at half that; see :func:`load`).
Every value is derived from the row id and a seed with ``hashint8extended``, so a given (id range,
seed) always gives the same rows, in any table.

What the rows look like:

* **diurnal load**: the share of rows per hour of the (UTC) day follows :data:`HOURLY_WEIGHTS`, a
  typical operator curve (quiet from midnight to 6, busy from 9 to 18); the time within the hour is
  uniform;
* **E.164 numbers** from several countries in the proportions of :data:`DEFAULT_COUNTRIES`
  (NL +31, DE +49, BE +32, GB +44, US +1, BR +55, IN +91), mobile number plans of each country;
  the ``region`` column (a typical class column) holds the caller's ISO country code;
* **durations** heavy-tailed: 12% unanswered calls of 0 s, the rest log-normal (median 75 s,
  a few calls of hours, capped at 4 h);
* **tenants** skewed: ``tenant-000`` is the largest, the share falls with the number;
* **late rows**: a fraction of rows carries a timestamp 1 to ``late_max_days`` days before the
  day it belongs to (delayed mediation, re-sent batches), and a fraction has a NULL timestamp.

Which columns are filled is decided by their names (see :func:`column_expressions`); other columns
are left to their defaults. Use :data:`CDR_COLUMNS`, :data:`SMS_COLUMNS` or :data:`EMAIL_COLUMNS`
for a table of the usual shape.

That is the ``realistic`` profile (:class:`Options`). The ``uniform`` profile gives the plain rows
the benchmarks have measured since their first figures: each day's rows evenly spread over the day,
Dutch mobile numbers (+316 and 8 digits), durations exponential around 3 minutes, all derived from
the id alone (no seed); it fills the id, the time column, the numbers and the duration, nothing else.

:func:`load` fills consecutive days with the same number of rows; :func:`load_days` fills the days of
a plan (:func:`plan_days`: any days, each with its own number of rows) into one or more tables,
the same rows in each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]

CDR_COLUMNS = ("id bigint, tenant text, region text, started_at timestamptz, caller text, callee text, "
               "duration_s int")
SMS_COLUMNS = "id bigint, tenant text, region text, sent_at timestamptz, sender text, recipient text, segments int"
EMAIL_COLUMNS = ("id bigint, tenant text, region text, sent_at timestamptz, sender text, recipient text, "
                 "size_bytes int")
KINDS = ("cdr", "sms", "email")
PROFILES = ("realistic", "uniform")

# Share of a day's rows per UTC hour 0..23 (relative weights).
HOURLY_WEIGHTS: tuple[float, ...] = (
    1.2, 0.7, 0.5, 0.4, 0.4, 0.6, 1.5, 3.0, 5.0, 6.5, 7.0, 7.0,
    6.5, 6.5, 6.8, 6.8, 6.6, 6.2, 5.5, 4.8, 4.0, 3.2, 2.4, 1.7,
)


@dataclass(frozen=True)
class Country:
    """A country's mobile numbers: ``prefix`` then ``digits`` random digits (the first not 0),
    or, with ``area``, a two-digit area code 11-99 before them (Brazil)."""

    iso: str
    prefix: str
    digits: int
    share: float
    area: bool = False
    low: int | None = None  # smallest national number after the prefix (default: 10^(digits-1))

    @property
    def lowest(self) -> int:
        return self.low if self.low is not None else int(10 ** (self.digits - 1))

    @property
    def span(self) -> int:
        return int(10 ** self.digits) - self.lowest


DEFAULT_COUNTRIES: tuple[Country, ...] = (
    Country("NL", "+316", 8, 0.30),
    Country("DE", "+4917", 8, 0.18),
    Country("BE", "+324", 8, 0.08, low=60_000_000),
    Country("GB", "+447", 9, 0.06),
    Country("US", "+1", 10, 0.14, low=2_000_000_000),
    Country("BR", "+55", 9, 0.10, area=True),
    Country("IN", "+91", 10, 0.14, low=6_000_000_000),
)
EMAIL_DOMAINS = ("example.nl", "example.de", "example.be", "example.co.uk", "example.com", "example.com.br",
                 "example.in")

LUT_SIZE = 1024          # resolution of the hour and country lookup tables
UNIT = 16_777_216        # uniforms are 24-bit: (h & 0xffffff) / 2^24
UNANSWERED_SHARE = 0.12
DURATION_MEDIAN_S = 75.0
DURATION_SIGMA = 1.1
DURATION_CAP_S = 14_400


@dataclass(frozen=True)
class Options:
    """How rows are generated; the defaults give clean, punctual data."""

    late_fraction: float = 0.0
    late_max_days: int = 7
    null_fraction: float = 0.0
    tenants: int = 50
    countries: tuple[Country, ...] = DEFAULT_COUNTRIES
    seed: int = 0
    profile: str = "realistic"

    def check(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        if not 0 <= self.late_fraction <= 1 or not 0 <= self.null_fraction <= 1:
            raise ValueError("late and NULL fractions must be between 0 and 1")
        if self.late_fraction + self.null_fraction > 1:
            raise ValueError("late and NULL fractions together must not exceed 1")
        if self.late_max_days < 1:
            raise ValueError("late_max_days must be at least 1")
        if self.tenants < 1:
            raise ValueError("tenants must be at least 1")
        if not self.countries or any(c.share < 0 for c in self.countries) or sum(c.share for c in self.countries) <= 0:
            raise ValueError("countries need positive shares")


@dataclass(frozen=True)
class Day:
    """``rows`` rows on the UTC day starting at ``start``, ids from ``first_id`` on."""

    start: datetime
    rows: int
    first_id: int


def plan_days(today: datetime, spec: Sequence[tuple[int, int]], first_id: int = 1) -> list[Day]:
    """``spec``: (days before ``today``, rows) pairs -> days with consecutive id ranges."""
    days = []
    next_id = first_id
    for days_ago, rows in spec:
        days.append(Day(today - timedelta(days=days_ago), rows, next_id))
        next_id += rows
    return days


@dataclass(frozen=True)
class LoadResult:
    rows: int
    seconds: float
    first_id: int
    last_id: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def lookup_table(weights: Sequence[float], size: int = LUT_SIZE) -> list[int]:
    """``size`` bucket -> index entries, each index getting a share of buckets proportional to its
    weight (largest remainder), so that a uniform bucket picks index i with probability ~w_i."""
    total = float(sum(weights))
    exact = [w / total * size for w in weights]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)[: size - sum(counts)]:
        counts[i] += 1
    return [i for i, n in enumerate(counts) for _ in range(n)]


def expected_hour_shares() -> list[float]:
    """Share of rows per hour that :data:`HOURLY_WEIGHTS` gives after quantisation."""
    lut = lookup_table(HOURLY_WEIGHTS)
    return [lut.count(h) / len(lut) for h in range(24)]


def expected_country_shares(countries: Sequence[Country] = DEFAULT_COUNTRIES) -> dict[str, float]:
    lut = lookup_table([c.share for c in countries])
    return {c.iso: lut.count(i) / len(lut) for i, c in enumerate(countries)}


def _u(k: int) -> str:
    """A uniform in [0, 1) from hash k of the row."""
    return f"((r.h{k} & {UNIT - 1})::float8 / {UNIT})"


def _number(countries: Sequence[Country], idx: str, h: str) -> sql.Composable:
    """E.164 number of the country with index ``idx``, digits from the hash ``h``."""
    mask = "9223372036854775807"
    branches = []
    for i, c in enumerate(countries):
        body = sql.SQL("{} || ({} + mod({} & {}, {}))::text").format(
            sql.Literal(c.prefix), sql.SQL(str(c.lowest)), sql.SQL(h), sql.SQL(mask), sql.SQL(str(c.span)))
        if c.area:
            body = sql.SQL("{} || (11 + mod(({} >> 40) & 255, 89))::text || (9 * {} + mod({} & {}, {}))::text").format(
                sql.Literal(c.prefix), sql.SQL(h), sql.SQL(str(10 ** (c.digits - 1))), sql.SQL(h), sql.SQL(mask),
                sql.SQL(str(10 ** (c.digits - 1))))
        branches.append(sql.SQL("WHEN {} THEN {}").format(sql.Literal(i), body))
    return sql.SQL("CASE {} {} END").format(sql.SQL(idx), sql.SQL(" ").join(branches))


def column_expressions(columns: dict[str, str], time_column: str, kind: str, opts: Options) -> dict[str, sql.Composable]:
    """SQL expression per column to fill, chosen by name: ``columns`` maps name -> type (format_type).

    Over the row ``r`` of :func:`rows_sql`: the time column, ``id``, ``tenant``/``tenant_id``, ``region``/``country``,
    ``caller``/``callee``/``msisdn`` (E.164), ``sender``/``recipient`` (E.164, or addresses for
    e-mail), ``duration_s``/``duration``, ``segments``, ``size_bytes``/``bytes``. The ``uniform``
    profile fills only the time column, ``id``, the numbers and the duration.
    """
    if opts.profile == "uniform":
        return _uniform_expressions(columns, time_column, kind)
    secs = f"(r.day + r.hr * 3600 + ((r.h1 >> 10) & {UNIT - 1})::float8 / {UNIT} * 3600)"
    late = (f"CASE WHEN {_u(3)} < {opts.null_fraction + opts.late_fraction!r} THEN 86400 * "
            f"(1 + mod((r.h3 >> 24) & 1073741823, {opts.late_max_days})) ELSE 0 END")
    ts = sql.SQL(f"CASE WHEN {_u(3)} < {opts.null_fraction!r} THEN NULL ELSE to_timestamp({secs} - {late}) END")
    caller_idx, callee_idx = "r.c1", "r.c2"
    caller = _number(opts.countries, caller_idx, "(r.h2 >> 10)")
    callee = _number(opts.countries, callee_idx, "(r.h4 >> 10)")
    region = sql.SQL("CASE {} {} END").format(sql.SQL(caller_idx), sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(i), sql.Literal(c.iso)) for i, c in enumerate(opts.countries)))
    tenant_idx = f"floor({opts.tenants} * {_u(5)} * {_u(5)})::int"
    # log-normal by Box-Muller from two uniforms of h6; 0 s for unanswered calls
    ua = f"(((r.h6 & {UNIT - 1}) + 1)::float8 / {UNIT})"
    ub = f"(((r.h6 >> 24) & {UNIT - 1})::float8 / {UNIT})"
    lognormal = f"exp(ln({{median}}) + {DURATION_SIGMA} * sqrt(-2 * ln({ua})) * cos(2 * pi() * {ub}))"
    duration = sql.SQL(f"CASE WHEN ((r.h6 >> 48) & 65535)::float8 / 65536 < {UNANSWERED_SHARE}"
                       f" THEN 0 ELSE least({DURATION_CAP_S}, round({lognormal.format(median=DURATION_MEDIAN_S)}))::int END")
    segments = sql.SQL(f"(1 + floor(-ln({ua}) * 0.5))::int")
    size_bytes = sql.SQL(f"least(25000000, round({lognormal.format(median=20000.0)}))::int")
    domains = sql.Literal(list(EMAIL_DOMAINS))

    def address(h: str, who: str) -> sql.Composable:
        return sql.SQL("{} || (({} >> 20) & 1048575)::text || '@' || ({}::text[])[1 + mod({} & 1048575, {})]").format(
            sql.Literal(who), sql.SQL(h), domains, sql.SQL(h), sql.SQL(str(len(EMAIL_DOMAINS))))

    out: dict[str, sql.Composable] = {}
    for name, typ in columns.items():
        expr: sql.Composable | None = None
        if name == time_column:
            expr = ts
        elif name == "id":
            expr = sql.SQL("r.id")
        elif name in ("tenant", "tenant_id"):
            expr = (sql.SQL(tenant_idx) if typ in ("integer", "bigint", "smallint")
                    else sql.SQL(f"'tenant-' || lpad({tenant_idx}::text, 3, '0')"))
        elif name in ("region", "country"):
            expr = region
        elif name in ("caller", "msisdn"):
            expr = caller
        elif name == "callee":
            expr = callee
        elif name in ("sender", "recipient"):
            if kind == "email":
                expr = address("(r.h2 >> 10)" if name == "sender" else "(r.h4 >> 10)",
                               "user" if name == "sender" else "rcpt")
            else:
                expr = caller if name == "sender" else callee
        elif name in ("duration_s", "duration"):
            expr = duration
        elif name == "segments":
            expr = segments
        elif name in ("size_bytes", "bytes"):
            expr = size_bytes
        if expr is not None:
            out[name] = expr
    return out


_ROWS = """
SELECT q.*, (@COUNTRIES@)[1 + (q.h2 & @MASK@)] AS c1, (@COUNTRIES@)[1 + (q.h4 & @MASK@)] AS c2,
       (@HOURS@)[1 + (q.h1 & @MASK@)] AS hr
FROM (SELECT x.id, %(day)s::float8 AS day,
             hashint8extended(x.id, %(s1)s) AS h1, hashint8extended(x.id, %(s2)s) AS h2,
             hashint8extended(x.id, %(s3)s) AS h3, hashint8extended(x.id, %(s4)s) AS h4,
             hashint8extended(x.id, %(s5)s) AS h5, hashint8extended(x.id, %(s6)s) AS h6
      FROM (SELECT %(first)s::bigint + g AS id FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS x
      OFFSET 0) AS q
OFFSET 0
"""


# The uniform profile's rows: the time evenly spread over the day (a jitter within each row's slot of
# ``step`` seconds), the hashes the numbers and the duration are made of. Parameters: start, step,
# first, lo, hi.
_UNIFORM_ROWS = """
SELECT x.id,
       %(start)s::timestamptz + make_interval(secs => (x.g + (hashint8(x.id) & 1023) / 1024.0) * %(step)s::float8) AS t,
       hashint8(x.id) AS u1, hashint8(-x.id) AS u2, hashint8(x.id * 7 + 3) AS u3
FROM (SELECT g, %(first)s::bigint + g AS id FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS x
"""


def _uniform_expressions(columns: dict[str, str], time_column: str, kind: str) -> dict[str, sql.Composable]:
    """The uniform profile's columns over :data:`_UNIFORM_ROWS`: +316 numbers, durations exponential
    with a mean of 180 s (``-180 ln(1 - u)``)."""

    def number(h: str) -> sql.Composable:
        return sql.SQL(f"'+316' || (10000000 + mod(r.{h} & 2147483647, 90000000))::text")

    out: dict[str, sql.Composable] = {}
    for name in columns:
        if name == time_column:
            out[name] = sql.SQL("r.t")
        elif name == "id":
            out[name] = sql.SQL("r.id")
        elif name in ("caller", "msisdn") or (name == "sender" and kind != "email"):
            out[name] = number("u1")
        elif name == "callee" or (name == "recipient" and kind != "email"):
            out[name] = number("u2")
        elif name in ("duration_s", "duration"):
            out[name] = sql.SQL("floor(-180 * ln(1 - (r.u3 & 1048575) / 1048576.0))::int")
    return out


def rows_sql(opts: Options) -> str:
    """The rows of one piece, ``r``: id, the day's start (epoch), hashes h1-h6 of the id, the caller's and
    callee's country indexes c1, c2 and the hour of the day hr (each computed once per row; the lookup
    tables are integer array literals). Parameters: day, first, lo, hi, s1-s6 (hash seeds).
    The uniform profile's rows are :data:`_UNIFORM_ROWS`."""
    if opts.profile == "uniform":
        return _UNIFORM_ROWS
    countries = "'{" + ",".join(map(str, lookup_table([c.share for c in opts.countries]))) + "}'::int[]"
    hours = "'{" + ",".join(map(str, lookup_table(HOURLY_WEIGHTS))) + "}'::int[]"
    return (_ROWS.replace("@COUNTRIES@", countries).replace("@HOURS@", hours)
            .replace("@MASK@", str(LUT_SIZE - 1)))


def table_columns(conn: Conn, table: str) -> dict[str, str]:
    """Column name -> type of ``table`` (``schema.name`` or ``name``), in column order."""
    rows = conn.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a"
        " WHERE a.attrelid = pg_catalog.to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " AND a.attgenerated = '' ORDER BY a.attnum", [table]).fetchall()
    if not rows:
        raise ValueError(f"table {table} does not exist or has no columns")
    return {str(n): str(t) for n, t in rows}


def detect_time_column(conn: Conn, table: str, columns: dict[str, str]) -> str:
    """The managed table's time column when pgretention manages it, else the first timestamp column.

    Managed tables are looked up by name with ``to_regclass``, which is NULL (not an error) for a
    managed table that was dropped or renamed: one broken table does not stop generating for others.
    """
    row = None
    if conn.execute("SELECT pg_catalog.to_regclass('pgretention.managed_table') IS NOT NULL").fetchone() == (True,):
        row = conn.execute(
            "SELECT m.time_column FROM pgretention.managed_table m WHERE pg_catalog.to_regclass(pg_catalog.format("
            "'%%I.%%I', m.table_schema, m.table_name)) = pg_catalog.to_regclass(%s)", [table]).fetchone()
    if row is not None:
        return str(row[0])
    for name, typ in columns.items():
        if typ.startswith("timestamp") or typ == "date":
            return name
    raise ValueError(f"table {table} has no timestamp column")


def detect_kind(columns: dict[str, str]) -> str:
    if "size_bytes" in columns or "bytes" in columns or "message_id" in columns:
        return "email"
    if "segments" in columns:
        return "sms"
    return "cdr"


def _qualified(table: str) -> sql.Composable:
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema or "public", name)


def insert_statement(table: str, exprs: dict[str, sql.Composable], opts: Options | None = None) -> sql.Composed:
    """``INSERT INTO table (...) SELECT ...`` of one piece (parameters: see :func:`_pieces`)."""
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM ({}) AS r").format(
        _qualified(table), sql.SQL(", ").join(sql.Identifier(c) for c in exprs),
        sql.SQL(", ").join(exprs.values()), sql.SQL(rows_sql(opts or Options())))


def _copy_statements(table: str, exprs: dict[str, sql.Composable], types: dict[str, str], opts: Options,
                     piece: dict[str, Any]) -> tuple[sql.Composed, sql.Composed]:
    """``COPY (SELECT ...) TO STDOUT`` generating one piece, and the ``COPY table FROM STDIN`` taking
    it, in binary format (each value cast to its column's exact type, as binary COPY needs)."""
    rows = sql.SQL(rows_sql(opts).replace("{", "{{").replace("}", "}}").replace("%(", "{").replace(")s", "}")).format(
        **{k: sql.Literal(v) for k, v in piece.items()})
    select = sql.SQL("SELECT {} FROM ({}) AS r").format(
        sql.SQL(", ").join(sql.SQL("({})::{}").format(e, sql.SQL(types[c])) for c, e in exprs.items()), rows)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in exprs)
    return (sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select),
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(_qualified(table), cols))


def _connect(dsn: str) -> Conn:
    """A loader's connection; wall-clock columns (timestamp without time zone) get UTC hours."""
    c = psycopg.connect(dsn, autocommit=True)
    c.execute("SET TimeZone = 'UTC'")
    return c


def _pieces(days: Sequence[Day], chunk: int, seed: int) -> list[dict[str, Any]]:
    """Parameters of each piece of at most ``chunk`` rows of ``days`` (both profiles' parameters)."""
    pieces: list[dict[str, Any]] = []
    for d in days:
        start = d.start if d.start.tzinfo else d.start.replace(tzinfo=timezone.utc)
        for lo in range(0, d.rows, chunk):
            hi = min(lo + chunk, d.rows) - 1
            pieces.append({"day": start.timestamp(), "start": start, "step": 86400.0 / d.rows, "first": d.first_id,
                           "lo": lo, "hi": hi, **{f"s{i}": seed * 8 + i for i in range(1, 7)}})
    return pieces


def load(
    conn: Conn | str,
    table: str,
    start: datetime,
    days: int,
    rows_per_day: int,
    *,
    time_column: str | None = None,
    kind: str | None = None,
    options: Options | None = None,
    first_id: int = 1,
    jobs: int = 1,
    chunk: int = 250_000,
    method: str = "insert",
) -> LoadResult:
    """Insert ``days`` x ``rows_per_day`` rows into ``table``, day k holding ids
    ``first_id + k * rows_per_day`` onwards and times on the UTC day ``start + k days``.

    :param conn: a DSN, or a connection (then ``jobs`` must be 1; with ``method="copy"`` a second
        connection to the same database is opened from its connection string, so a password must
        come from the environment or a password file).
    :param time_column: default: the managed table's time column, else the first timestamp column.
    :param kind: ``cdr``, ``sms`` or ``email`` (decides what ``sender``/``recipient`` hold);
        default: from the columns.
    :param jobs: loaders in parallel (each uses its own connections).
    :param method: ``insert`` (default): one ``INSERT ... SELECT`` per piece, rows generated by the
        server (about 2.8 us of server CPU per CDR row; two loaders on two cores measured 400k to
        613k rows/s depending on other load). ``copy``: the server generates each piece with ``COPY (SELECT ...) TO STDOUT``
        and the client streams it into ``COPY table FROM STDIN`` on a second connection, both
        binary; COPY's batched inserts do not make up for the client relaying every row (measured
        about half the rows per CPU-second of ``insert``).
    """
    if days < 0 or rows_per_day < 0:
        raise ValueError("days and rows_per_day must not be negative")
    day0 = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    plan = [Day(day0 + timedelta(days=k), rows_per_day, first_id + k * rows_per_day) for k in range(days)]
    res = load_days(conn, [table], plan, time_column=time_column, kind=kind, options=options, jobs=jobs,
                    chunk=chunk, method=method)
    total = days * rows_per_day
    return LoadResult(rows=total, seconds=res.seconds, first_id=first_id, last_id=first_id + total - 1)


def load_days(
    conn: Conn | str,
    tables: Sequence[str],
    days: Sequence[Day],
    *,
    time_column: str | None = None,
    kind: str | None = None,
    options: Options | None = None,
    jobs: int = 1,
    chunk: int = 250_000,
    method: str = "insert",
) -> LoadResult:
    """Insert the rows of ``days`` (see :func:`plan_days`) into each of ``tables``: the same rows in
    each table. Pieces of at most ``chunk`` rows, the largest first, are shared out over ``jobs``
    loaders; the other parameters are those of :func:`load`.
    """
    opts = options or Options()
    opts.check()
    if any(d.rows < 0 for d in days):
        raise ValueError("a day's rows must not be negative")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if method not in ("copy", "insert"):
        raise ValueError("method must be copy or insert")
    if jobs > 1 and not isinstance(conn, str):
        raise ValueError("loading with several jobs needs a DSN")
    own = isinstance(conn, str)
    main = _connect(conn) if isinstance(conn, str) else conn
    dsn = conn if isinstance(conn, str) else main.info.dsn
    try:
        work_list: list[tuple[_Target, dict[str, Any]]] = []
        for table in tables:
            types = table_columns(main, table)
            tcol = time_column or detect_time_column(main, table, types)
            if tcol not in types:
                raise ValueError(f"column {tcol} does not exist in table {table}")
            exprs = column_expressions(types, tcol, kind or detect_kind(types), opts)
            target = _Target(table, exprs, types, insert_statement(table, exprs, opts))
            work_list += [(target, p) for p in _pieces(days, chunk, opts.seed)]
        work_list.sort(key=lambda w: w[1]["hi"] - w[1]["lo"], reverse=True)

        def work(c: Conn, queue: list[tuple[_Target, dict[str, Any]]]) -> None:
            if method == "insert":
                with c.cursor() as cur:
                    for target, p in queue:
                        cur.execute(target.insert, p)
                return
            with _connect(dsn) as src:
                for target, p in queue:
                    out_sql, in_sql = _copy_statements(target.table, target.exprs, target.types, opts, p)
                    with src.cursor().copy(out_sql) as out, c.cursor().copy(in_sql) as inp:
                        for data in out:
                            inp.write(data)

        t0 = time.perf_counter()
        if jobs <= 1 or len(work_list) <= 1:
            work(main, work_list)
            if not main.autocommit:
                main.commit()
        else:
            def worker(queue: list[tuple[_Target, dict[str, Any]]]) -> None:
                with _connect(dsn) as c:
                    work(c, queue)

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(worker, [work_list[i::jobs] for i in range(jobs)]))
        seconds = time.perf_counter() - t0
    finally:
        if own:
            main.close()
    rows = [d for d in days if d.rows > 0]
    return LoadResult(rows=len(tables) * sum(d.rows for d in rows), seconds=seconds,
                      first_id=min((d.first_id for d in rows), default=1),
                      last_id=max((d.first_id + d.rows - 1 for d in rows), default=0))


@dataclass(frozen=True)
class _Target:
    """A table being loaded: its column expressions and types, and the statement of one piece."""

    table: str
    exprs: dict[str, sql.Composable]
    types: dict[str, str]
    insert: sql.Composed


__all__ = [
    "CDR_COLUMNS", "SMS_COLUMNS", "EMAIL_COLUMNS", "KINDS", "PROFILES", "DEFAULT_COUNTRIES", "HOURLY_WEIGHTS", "Country",
    "Options", "Day", "plan_days", "LoadResult", "load", "load_days", "lookup_table", "expected_hour_shares",
    "expected_country_shares", "column_expressions",
]
