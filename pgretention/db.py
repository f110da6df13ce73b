"""Connections the way libpq users expect them.

A DSN (key/value or URI) or nothing at all: libpq then reads the ``PG*`` environment variables
and service files (``PGSERVICE``, ``~/.pg_service.conf``). pgretention adds
``application_name=pgretention`` and a connect timeout unless the DSN sets them, and sets a
statement timeout on the session. Driver errors become one-line :mod:`pgretention.errors`;
:func:`rows` and :func:`one` read query results with that translation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from pgretention.errors import ConnectionFailed, InvalidInput, PermissionDenied, PgRetentionError

APPLICATION_NAME = "pgretention"
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_STATEMENT_TIMEOUT = "15min"

Conn = psycopg.Connection[Any]


# Simulated time (``pgretention --simulate``): every session opened by :func:`connect` asks the
# server to allow reference times other than the clock in it (``pgretention.simulation_enable()``,
# which only the installing role may call). Tests and demos only.
_simulate = False


def simulate(on: bool = True) -> None:
    """Ask for simulated time in the sessions :func:`connect` opens from now on."""
    global _simulate
    _simulate = on


def build_conninfo(dsn: str | None, **overrides: Any) -> str:
    """Merge ``dsn`` with pgretention's defaults; explicit DSN keys win over defaults."""
    try:
        params = conninfo_to_dict(dsn or "")
    except psycopg.ProgrammingError as exc:
        raise InvalidInput(f"invalid DSN: {first_line(exc)}") from exc
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    params.update({k: v for k, v in overrides.items() if v is not None})
    return make_conninfo("", **params)


def connect(
    dsn: str | None = None,
    *,
    autocommit: bool = True,
    statement_timeout: str | None = DEFAULT_STATEMENT_TIMEOUT,
    notice_handler: Callable[[psycopg.errors.Diagnostic], None] | None = None,
    **overrides: Any,
) -> Conn:
    """Open a connection.

    :param dsn: libpq connection string or URI; ``None`` uses the ``PG*`` environment.
    :param statement_timeout: session ``statement_timeout`` (``None`` leaves the server's).
    :raises ConnectionFailed: the server is unreachable or refused the login.
    """
    conninfo = build_conninfo(dsn, **overrides)
    try:
        conn = psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(f"cannot connect: {first_line(exc)}") from exc
    except psycopg.Error as exc:
        raise translate(exc) from exc
    if notice_handler is not None:
        conn.add_notice_handler(notice_handler)
    if statement_timeout is not None:
        conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, false)", [statement_timeout])
    if _simulate:
        try:
            # (where pgretention is not installed there is nothing to allow)
            found = conn.execute("SELECT pg_catalog.to_regprocedure('pgretention.simulation_enable()')").fetchone()
            if found is not None and found[0] is not None:
                conn.execute("SELECT pgretention.simulation_enable()")
        except psycopg.Error as exc:
            conn.close()
            raise translate(exc) from exc
    if not autocommit and (statement_timeout is not None or _simulate):
        conn.commit()
    return conn


# what terminals and str.splitlines() take for the end of a line
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def one_line(text: str) -> str:
    """``text`` on one line: line-break characters (inside a quoted name, say) are shown escaped,
    never taken for the end of the line."""
    return "".join(c.encode("unicode_escape").decode("ascii") if c in _LINE_BREAKS else c for c in text)


def first_line(exc: BaseException) -> str:
    """The error's message on one line: the server's primary message, else the driver's first line."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = (primary if primary else str(exc).strip().split("\n")[0]).strip()
    return one_line(text) if text else exc.__class__.__name__


def translate(exc: psycopg.Error) -> PgRetentionError:
    """Turn a driver error into a one-line pgretention error of the right kind."""
    msg = first_line(exc)
    diag = getattr(exc, "diag", None)
    hint = getattr(diag, "message_hint", None) if diag is not None else None
    if hint:
        msg = f"{msg} (hint: {one_line(hint.split(chr(10))[0])})"
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return PermissionDenied(msg)
    # refusals first: SQLSTATE class 55 (object not in prerequisite state, lock not available,
    # object in use) are OperationalErrors to the driver, yet the server answered
    if isinstance(exc, (pgerr.LockNotAvailable, pgerr.ObjectInUse)):
        return PgRetentionError(msg)
    if isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, (pgerr.QueryCanceled, pgerr.ObjectNotInPrerequisiteState)
    ):
        return ConnectionFailed(msg)
    if isinstance(
        exc,
        (
            pgerr.InvalidParameterValue,
            pgerr.UndefinedTable,
            pgerr.UndefinedColumn,
            pgerr.UndefinedObject,
            pgerr.InvalidDatetimeFormat,
            pgerr.InvalidTextRepresentation,
            pgerr.DatatypeMismatch,
            pgerr.InvalidName,
            pgerr.CheckViolation,
            pgerr.RaiseException,
            pgerr.DuplicateObject,
            pgerr.ObjectNotInPrerequisiteState,
            pgerr.FeatureNotSupported,
            pgerr.IntervalFieldOverflow,
            pgerr.NumericValueOutOfRange,
        ),
    ):
        return InvalidInput(msg)
    return PgRetentionError(msg)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise driver errors raised in the block as pgretention errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


def rows(conn: Conn, query: str | sql.SQL | sql.Composed, params: Any = None) -> list[dict[str, Any]]:
    """Every row of ``query`` as a dict; driver errors become pgretention errors."""
    with translated(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def one(conn: Conn, query: str | sql.SQL | sql.Composed, params: Any = None) -> Any:
    """The first column of the first row of ``query`` (``None`` without a row)."""
    with translated():
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]
