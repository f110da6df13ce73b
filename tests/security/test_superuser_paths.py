"""C1, C2: roles of pgretention become superuser or read what only a superuser may read.

Each test performs the review's attack logged in as the attacking role and then measures the
outcome in the database: no role of the test is a superuser, no secret came back.
"""

from __future__ import annotations

import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.security.fix_roles import Actors, attempt, drop_newest_leaf, make_cdr, payload, require

# Internal functions the attacks call by name (update here when internals are renamed).
INTERNAL = {
    "premake": ("pgretention", "_premake"),
    # granted entry points that took over from _premake and subject_rows(identifiers) (issue 17)
    "job_begin": ("pgretention", "_job_begin"),
    "run_step": ("pgretention", "_run_step"),
}


def fn(key: str) -> sql.Identifier:
    return sql.Identifier(*INTERNAL[key])


@pytest.mark.parametrize("entry", ["premake_helper", "run"])
def test_c1_operator_temp_domain_in_partman_call(actors: Actors, entry: str) -> None:
    """C1: operator -> superuser via a temporary domain inside pg_partman calls.

    pg_partman, called from pgretention's definer code, puts the caller's pg_temp ahead of
    pg_catalog: the operator's temporary domain ``pg_temp.timestamptz`` runs its CHECK function
    as the function owner. Reached through the granted helper ``_premake`` or through ``run()`` on a
    day a partition is due."""
    db = actors.db
    tid = make_cdr(db, months=2)
    drop_newest_leaf(db, "public.cdr")  # a partition is due: run() calls pg_partman
    with actors.connect("op") as op:
        op.execute("CREATE FUNCTION pg_temp.pwn2(pg_catalog.timestamptz) RETURNS boolean LANGUAGE plpgsql AS $f$"
                    + payload("session_user") + "$f$")
        op.execute("CREATE DOMAIN pg_temp.timestamptz AS pg_catalog.timestamptz CHECK (pg_temp.pwn2(VALUE))")
        if entry == "premake_helper":
            out = attempt(op, sql.SQL("SELECT {}(%s, 'eu', now() + interval '5 months')").format(fn("premake")), [tid])
            if not out.ok:  # _premake is granted to no one now: the same premake through a run of its own
                out = attempt(op, sql.SQL("SELECT * FROM {}({}('sql', NULL, 'run', NULL), 'premake', %s, 'eu', NULL, NULL, 1)")
                              .format(fn("run_step"), fn("job_begin")), [tid])
        else:
            out = attempt(op, "CALL pgretention.run()")
    assert actors.superusers() == [], f"operator became superuser; attack {out}"


@pytest.mark.parametrize("schema", ["public", "admin_schema"])
def test_c1_admin_temp_view_shadows_pg_inherits(actors: Actors, schema: str) -> None:
    """C1: admin -> superuser via a temporary view ``pg_inherits`` read by pg_partman's
    create_parent (unqualified) inside ``create_table`` of a table with classes. In ``public`` as
    the review did, and in a schema the admin owns (where a fixed model still lets it create)."""
    if schema != "public":
        actors.db.execute(sql.SQL("CREATE SCHEMA admin_schema AUTHORIZATION {}").format(sql.Identifier(actors["adm"])))
    with actors.connect("adm") as adm:
        adm.execute("CREATE FUNCTION pg_temp.pwn() RETURNS boolean LANGUAGE plpgsql AS $f$"
                    + payload("session_user") + "$f$")
        adm.execute("CREATE TEMP VIEW pg_inherits AS SELECT * FROM pg_catalog.pg_inherits WHERE pg_temp.pwn()")
        out = attempt(adm, "SELECT pgretention.table_create(%s, 'id bigint, region text, at timestamptz',"
                           " 'at', '1 day', %s, p_class_column => 'region', p_default_class => 'b')",
                      [f"{schema}.t_hijack4", Jsonb({"a": {"drop_after": "30 days", "members": ["X"]}, "b": {"drop_after": "60 days"}})])
    assert actors.superusers() == [], f"admin became superuser; attack {out}"


def test_c2_admin_reads_password_hashes(actors: Actors) -> None:
    """C2: admin registers ``pg_catalog.pg_authid`` as a subject table and reads password hashes
    through ``subject_rows``."""
    victims = [actors["aud"], actors["evil"]]
    with actors.connect("adm") as adm:
        reg = attempt(adm, "SELECT pgretention.subject_table_register('pg_catalog.pg_authid', '{\"rolname\": \"account\"}')")
        out = attempt(adm, "SELECT row_data ->> 'rolname', row_data ->> 'rolpassword'"
                           " FROM pgretention.subject_rows(%s)", [Jsonb({"account": victims})])
        if not out.ok:  # roles read a subject's rows through a request now (M1)
            out = attempt(adm, "SELECT row_data ->> 'rolname', row_data ->> 'rolpassword' FROM pgretention.subject_rows("
                               "pgretention.request_create('access', %s))", [Jsonb({"account": victims})])
    leaked = [r for r in out.rows if r[1]]
    assert leaked == [], f"admin read password hashes (register {reg}): {[(r[0], r[1][:20]) for r in leaked]}"


def test_c2_key_material_read_by_operator(actors: Actors) -> None:
    """C2: admin registers pgretention's key tables as subject tables; the operator then reads
    key material (field keys, the identifier hash key) through ``subject_rows``. The key tables of
    the review are one store now: ``keyring`` (purposes ``field:contacts``, ``subject``), with the
    old ``field_key`` as a view of it."""
    db = actors.db
    db.execute("SELECT pgretention.field_encrypt('x', 'contacts')")  # creates the field key
    db.execute("SELECT pgretention.request_create('access', '{\"phone\": \"+31612340000\"}')")  # the hash key
    keys = [str(r[0]) for r in db.all("SELECT key FROM pgretention.field_key")]
    keys += [bytes(r[0]).hex() for r in db.all("SELECT key FROM pgretention.keyring WHERE purpose = 'subject'")]
    require(len(keys) == 2, "a field key and the identifier hash key exist")
    with actors.connect("adm") as adm:
        reg = [attempt(adm, "SELECT pgretention.subject_table_register('pgretention.field_key', '{\"purpose\": \"account\"}')"),
               attempt(adm, "SELECT pgretention.subject_table_register('pgretention.keyring', '{\"purpose\": \"account\"}')")]
    with actors.connect("op") as op:
        ident = Jsonb({"account": ["contacts", "field:contacts", "subject"]})
        out = attempt(op, "SELECT table_name, row_data::text FROM pgretention.subject_rows(%s::jsonb)", [ident])
        if not out.ok:  # roles read a subject's rows through a request now (M1)
            out = attempt(op, "SELECT table_name, row_data::text FROM pgretention.subject_rows("
                              "pgretention.request_create('access', %s))", [ident])
    seen = [k[:12] for k in keys if any(k in r[1] for r in out.rows)]
    assert seen == [], f"operator read key material {seen} (register {[str(r) for r in reg]})"


def test_c2_admin_superuser_via_anonymising_erasure(actors: Actors) -> None:
    """C2: admin registers ``pg_authid`` with erasure 'anonymise' mapping rolsuper to true; an
    erasure request for its own role name is an UPDATE of pg_authid run as superuser."""
    adm_name = actors["adm"]
    with actors.connect("adm") as adm:
        reg = attempt(adm, "SELECT pgretention.subject_table_register('pg_catalog.pg_authid', '{\"rolname\": \"account\"}',"
                           " p_erasure => 'anonymise', p_anonymise => %s)",
                      [Jsonb({"rolname": adm_name, "rolsuper": "true", "rolbypassrls": "true"})])
        out = attempt(adm, "SELECT pgretention.request_fulfil(pgretention.request_create('erasure', %s))",
                      [Jsonb({"account": [adm_name]})])
    assert actors.superusers() == [], f"admin became superuser (register {reg}); erasure {out}"
