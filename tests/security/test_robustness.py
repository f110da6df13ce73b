"""H5, H6, M4, L3, L4, L5: retention that misses what it protects or what it must delete, and
single bad rows or names that break it for everyone.

Fixed means: held rows stay, erased rows go (or the request is not reported fulfilled), one bad
row does not stop premaking, listings and generators keep working, spoofing names are refused.
"""

from __future__ import annotations

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.fix_db import simulate
from tests.security.fix_roles import (
    Actors,
    attempt,
    give_table,
    leaves,
    make_app_entities,
    make_cdr,
    make_sms_log,
)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H5: fixed by issue 17")
@pytest.mark.parametrize("path", ["run_entities", "erase_entity"])
def test_h5_entity_engine_ignores_legal_hold(actors: Actors, path: str) -> None:
    """H5: a lead under a legal hold (subject hold on its e-mail, table registered for subject
    requests) is deleted by the entity engine's run (as the scheduler does) or by ``erase_entity``."""
    db = actors.db
    make_app_entities(actors, leads=20, due_leads=11)
    db.execute("SELECT pgretention.subject_table_register('app.lead', '{\"email\": \"email\"}')")
    db.execute("SELECT pgretention.hold_set('fraud investigation', 'POLICE-5', 'email', 'l5@x.nl')")
    if path == "run_entities":
        with actors.connect("op") as op:
            out = attempt(op, "CALL pgretention.entity_run(p_rule => 'leads')")
    else:
        with actors.connect("adm") as adm:
            out = attempt(adm, "SELECT pgretention.entity_erase('leads', '5')")
    assert db.one("SELECT count(*) FROM app.lead WHERE email = 'l5@x.nl'") == 1, f"held lead deleted; {path} {out}"


CASES = {
    # kind: (column type, stored values, requested identifiers)
    "ip": ("inet", ["10.0.0.1", "2001:db8::1"], ["10.0.0.1", "2001:db8::1"]),
    "email": ("text", ["Alice@Example.com", " alice@example.com", "alice@example.com"], ["Alice@Example.com"]),
    "phone": ("text", ["+31 6 1234 5678", "0031612345678", "+31612345678"], ["+31612345678"]),
}


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H6: fixed by issue 17")
@pytest.mark.parametrize("kind", sorted(CASES))
def test_h6_erasure_misses_rows_and_reports_fulfilled(actors: Actors, kind: str) -> None:
    """H6: request values are normalised, stored values compared as raw text: an ``ip`` never
    matches an ``inet`` column, e-mails and phone numbers stored in another case or format are
    missed, and the request is reported 'fulfilled'."""
    db = actors.db
    typ, stored, asked = CASES[kind]
    with actors.connect("appowner") as own:
        own.execute(sql.SQL("CREATE TABLE app.subject_data (id int PRIMARY KEY, ident {}, note text)").format(sql.SQL(typ)))
        for i, v in enumerate(stored):
            own.execute(sql.SQL("INSERT INTO app.subject_data VALUES (%s, %s::{}, 'x')").format(sql.SQL(typ)), [i, v])
    db.execute("SELECT pgretention.subject_table_register('app.subject_data', %s)", [Jsonb({"ident": kind})])
    with actors.connect("op") as op:
        out = attempt(op, "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', %s))",
                      [Jsonb({kind: asked})])
    left = db.one("SELECT count(*) FROM app.subject_data")
    status = out.rows[0][0].get("status") if out.ok else None
    assert left == 0 or status != "fulfilled", f"{left} of {len(stored)} rows kept, request {out}"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="H6: fixed by issue 17")
def test_h6_hold_misses_differently_formatted_number(actors: Actors) -> None:
    """H6: a subject hold on ``+31612345678`` does not keep a row that stores the number as
    ``0031612345678``: an erasure of the same person by e-mail deletes it."""
    db = actors.db
    with actors.connect("appowner") as own:
        own.execute("CREATE TABLE app.customer (id int PRIMARY KEY, phone text, email text)")
        own.execute("INSERT INTO app.customer VALUES (1, '0031612345678', 'x@example.org')")
    db.execute("SELECT pgretention.subject_table_register('app.customer', '{\"phone\": \"phone\", \"email\": \"email\"}')")
    db.execute("SELECT pgretention.hold_set('disclosure order', 'ORDER-17', 'phone', '+31612345678')")
    with actors.connect("op") as op:
        out = attempt(op, "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', %s))",
                      [Jsonb({"email": "x@example.org"})])
    assert db.one("SELECT count(*) FROM app.customer") == 1, f"held row deleted; request {out}"


def test_m4_future_dated_row_blocks_premaking(actors: Actors) -> None:
    """M4: one row dated four days ahead (written by a role with INSERT only) lands in the
    default partition; from the run that premakes its day on, premaking fails for the whole
    batch (pg_partman re-raises the ATTACH error as P0001, the handler never fires) and every run
    fails until the row expires."""
    db = actors.db
    db.execute("SELECT pgretention.table_create('public.clicks', 'id bigint, at timestamptz', 'at', '1 day',"
               " '{\"d\": {\"drop_after\": \"13 months\"}}', p_premake => 2)")
    db.execute(sql.SQL("GRANT INSERT ON public.clicks TO {}").format(sql.Identifier(actors["evil"])))
    with actors.connect("evil") as evil:
        out = attempt(evil, "INSERT INTO public.clicks VALUES (1, date_trunc('day', now()) + interval '4 days 1 hour')")
    simulate(db)  # the installing role simulates the days ahead
    with db.connect() as cron:
        run = attempt(cron, "CALL pgretention.run(now() + interval '2 days')")
    day3 = db.one("SELECT (date_trunc('day', now()) + interval '3 days')::text")
    premade = [leaf for leaf, bound in leaves(db, "public.clicks") if f"FROM ('{day3}')" in bound]
    status = db.one("SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1")
    assert premade, f"partition of {day3} not premade (insert {out}; run {run}, status {status})"


def test_l3_markup_in_hold_reason_breaks_listing(actors: Actors) -> None:
    """L3: CLI output renders Rich markup found in data: a hold reason ``[/]broken`` makes
    ``pgretention hold list`` crash for everybody (here: the auditor)."""
    db = actors.db
    with actors.connect("adm") as adm:
        adm.execute("SELECT pgretention.hold_set('[/]broken', 'ORDER-[b]1', 'phone', '+31612345678')")
    res = db.cli("hold", "list", dsn=actors.dsn("aud"))
    assert res.returncode == 0 and "no holds" not in res.stdout and "Error" not in res.stderr, \
        f"exit {res.returncode}: {res.stderr.strip()[-300:]}"


def test_l4_bidi_override_in_table_name(actors: Actors) -> None:
    """L4: names with bidi overrides / format characters are accepted: ``public.t\\u202egnp``
    reads as ``tpng`` in audit records and reports."""
    db = actors.db
    # the admin may create tables in public (as in the review), so only the name can stop it
    db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(actors["adm"])))
    with actors.connect("adm") as adm:
        out = attempt(adm, "SELECT pgretention.table_create(%s, 'id int, at timestamptz', 'at', '1 day',"
                           " '{\"d\": {\"drop_after\": \"30 days\"}}')", ["public.t\u202egnp"])
    made = db.all("SELECT relname::text FROM pg_class WHERE relname ~ '[\u202a-\u202e\u2066-\u2069\u200b-\u200f]'")
    assert made == [], f"created {made!r}; {out}"


def test_l5_dropped_managed_table_breaks_generate(actors: Actors) -> None:
    """L5: once any managed table is dropped (by its owner), ``pgretention generate`` fails for
    every table (it casts every managed table's name to regclass)."""
    db = actors.db
    make_cdr(db, months=1, rows=10)
    make_sms_log(db, default_rows=0)
    give_table(db, "public.sms_log", actors["appowner"])
    with actors.connect("appowner") as own:
        own.execute("DROP TABLE public.sms_log")
    before = db.one("SELECT count(*) FROM public.cdr")
    res = db.cli("generate", "public.cdr", "--days", "1", "--rows-per-day", "10", "--first-id", "100000")
    after = db.one("SELECT count(*) FROM public.cdr")
    assert res.returncode == 0 and after == before + 10, f"exit {res.returncode}: {res.stderr.strip()[-300:]}"
