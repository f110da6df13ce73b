"""Upgrading a database of the previous release (catalog 0008, its functions) to the layout by engine.

The previous release's ``sql/`` is read from this checkout's history (commit ``b719f6a``); without that
history (a shallow clone) these tests are skipped.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgretention import installer
from pgretention.cluster import Server
from tests.fix_catalog import diff, snapshot
from tests.fix_db import DB, ROOT, simulate

PREVIOUS_RELEASE = "b719f6a"
PHONE = "+31612345678"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def previous_sql() -> list[tuple[str, str]]:
    """The previous release's sql/ files in its manifest order."""
    try:
        manifest = _git("show", f"{PREVIOUS_RELEASE}:sql/manifest.txt")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the previous release (commit {PREVIOUS_RELEASE}) is not in this checkout's history"
                    " (a shallow clone?): the upgrade from it cannot be tested")
    names = [line.split("#", 1)[0].strip() for line in manifest.splitlines()]
    return [(name, _git("show", f"{PREVIOUS_RELEASE}:sql/{name}")) for name in names if name]


def install_previous(db: DB, files: list[tuple[str, str]]) -> None:
    """What the previous release's installer left: catalog at 0008, its functions, views and grants."""
    installer.install(db.dsn, with_cron=False, _revision="0008")
    with psycopg.connect(db.dsn) as conn:
        for _name, text in files:
            conn.execute(text.encode())
    assert db.one("SELECT version_num FROM pgretention.alembic_version") == "0008"
    assert db.one("SELECT to_regprocedure('pgretention._run_begin(text, timestamptz, text)') IS NOT NULL")


def upgrade(db: DB) -> None:
    rep = installer.install(db.dsn, with_cron=False, upgrade_only=True)
    assert rep.revision == installer.head_revision()


def test_upgraded_catalog_equals_a_fresh_install(server: Server, db: DB, previous_sql: list[tuple[str, str]]) -> None:
    """Functions of the previous release that this one renamed or removed are gone after the upgrade."""
    install_previous(db, previous_sql)
    # a check of the DBA's own, the report's plug-in point: an upgrade keeps it
    db.execute("CREATE FUNCTION pgretention.report_check_zz_site(p_now timestamptz)"
               " RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)"
               " LANGUAGE sql AS $$ SELECT 'site', 'warning', 'x', 'site_rule', 'a site rule', 1::bigint $$")
    upgrade(db)
    assert db.one("SELECT count(*) FROM pgretention.report_findings() WHERE section = 'site'") == 1
    db.execute("DROP FUNCTION pgretention.report_check_zz_site(timestamptz)")
    for gone in ("_run_begin(text, timestamptz, text)", "_run_settings()", "_entity_run_settings()",
                 "_entity_table(text, text)", "_purpose_key(text)", "_report_time_expr(name, text, text)"):
        assert db.one("SELECT to_regprocedure(%s)", ["pgretention." + gone]) is None, gone
    for gone in ("anon_key", "field_key", "subject_hash_key", "entity_hash_key"):
        assert db.one("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", ["pgretention." + gone]) in ("v", None)
    fresh = server.create_database()
    try:
        installer.install(server.conninfo(fresh), with_cron=False)
        with db.connect() as a, psycopg.connect(server.conninfo(fresh)) as b:
            assert diff(snapshot(a), snapshot(b)) == {}
    finally:
        server.drop_database(fresh)
    # and a second upgrade changes nothing
    with db.connect() as conn:
        before = snapshot(conn)
    upgrade(db)
    with db.connect() as conn:
        assert diff(before, snapshot(conn)) == {}


def _customers(db: DB, now: datetime) -> None:
    db.execute("CREATE TABLE public.customer (id bigint PRIMARY KEY, name text, email text, ended_at timestamptz)")
    db.execute("INSERT INTO public.customer VALUES (1, 'Ann', 'ann@example.org', %s), (2, 'Bob', 'ann@example.org', %s)",
               [now - timedelta(days=400), now - timedelta(days=320)])
    db.execute("SELECT pgretention.create_entity_rule('customers', 'public.customer', 'id',"
               " '[{\"column\": \"ended_at\"}]', '300 days', 'anonymise',"
               " p_anonymise => '{\"name\": {\"action\": \"null\"}, \"email\": {\"action\": \"hash\"}}')")


def _calls(db: DB, year: int) -> None:
    db.execute("SELECT pgretention.create_table('public.cdr', 'id bigint, started_at timestamptz NOT NULL, caller text',"
               " 'started_at', '1 month', %s, p_start => %s, p_premake => 1)",
               [Jsonb({"all": {"anonymise_after": "30 days", "drop_after": "3650 days"}}), datetime(year, 1, 1, tzinfo=timezone.utc)])
    db.execute("INSERT INTO cdr VALUES (1, %s, %s), (2, %s, %s)",
               [datetime(year, 1, 5, tzinfo=timezone.utc), PHONE, datetime(year, 2, 5, tzinfo=timezone.utc), PHONE])
    db.execute("SELECT pgretention.anon_set_rule('public.cdr', 'caller', 'pseudonym')")
    db.execute("SELECT pgretention.anon_set_rule('public.cdr', 'id', 'keep')")


def test_keys_survive_the_upgrade_byte_for_byte(db: DB, previous_sql: list[tuple[str, str]]) -> None:
    """Pseudonyms, identifier hashes, encrypted fields and entity hashes made before are made alike after."""
    install_previous(db, previous_sql)
    now = datetime.now(timezone.utc)
    year = now.year - 1
    epoch = f"{year}q1"
    # before: the previous release makes one of each
    _calls(db, year)
    db.execute("CALL pgretention.run_anonymiser(%s)", [datetime(year, 3, 15, tzinfo=timezone.utc)])  # January's partition
    pseudonym = db.one("SELECT caller FROM cdr WHERE id = 1")
    assert pseudonym.startswith("p") and db.one("SELECT caller FROM cdr WHERE id = 2") == PHONE
    db.execute("SELECT pgretention._epoch_key(%s)", [f"{year - 1}q4"])
    db.execute("SELECT pgretention.anon_key_rotate(%s)", [f"{year - 1}q4"])
    db.execute("SELECT pgretention._epoch_key(%s)", [f"{year - 1}q3"])
    db.execute("SELECT pgretention.anon_key_destroy(%s)", [f"{year - 1}q3"])
    anon_before = db.all("SELECT epoch, key, created_at, rotated_at, destroyed_at FROM pgretention.anon_key ORDER BY epoch")
    db.execute("CREATE TABLE public.contact (id int, secret bytea)")
    db.execute("INSERT INTO public.contact VALUES (1, pgretention.encrypt_field('ann@example.org', 'contacts'))")
    field_before = db.one("SELECT key FROM pgretention.field_key WHERE purpose = 'contacts'")
    rid = db.one("SELECT pgretention.request_create('access', %s)", [Jsonb({"phone": [PHONE]})])
    hashes_before = db.one("SELECT identifier_hashes FROM pgretention.subject_request WHERE id = %s", [rid])
    subject_key = db.one("SELECT key FROM pgretention.subject_hash_key")
    entity_key = db.one("SELECT hash_key FROM pgretention.entity_hash_key")
    _customers(db, now)
    db.execute("CALL pgretention.run_entities(%s)", [now - timedelta(days=50)])  # customer 1 only
    entity_hash = db.one("SELECT email FROM public.customer WHERE id = 1")
    assert len(entity_hash) == 64 and db.one("SELECT email FROM public.customer WHERE id = 2") == "ann@example.org"

    upgrade(db)
    simulate(db)  # the reference times below are last year's: only a simulating session may use them

    # the keys, byte for byte, with their dates
    assert db.all("SELECT epoch, key, created_at, rotated_at, destroyed_at FROM pgretention.anon_key"
                  " ORDER BY epoch") == anon_before
    assert db.all("SELECT substr(purpose, 6), key, created_at, rotated_at, destroyed_at FROM pgretention.keyring"
                  " WHERE purpose LIKE 'anon:%%' ORDER BY 1") == anon_before
    assert db.one("SELECT encode(key, 'base64') FROM pgretention.keyring WHERE purpose = 'field:contacts'") == field_before
    assert db.one("SELECT key FROM pgretention.keyring WHERE purpose = 'subject'") == subject_key
    assert db.one("SELECT key FROM pgretention.keyring WHERE purpose = 'entity'") == entity_key
    # what they make: the same pseudonym for the same caller in the same epoch
    db.execute("CALL pgretention.anon_run(%s)", [datetime(year, 4, 15, tzinfo=timezone.utc)])  # February's partition
    assert db.one("SELECT caller FROM cdr WHERE id = 2") == pseudonym
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'key.create' AND object = %s", [epoch]) == 1
    # the same identifier hashes, the field still decrypts, and encrypts under the same key
    rid2 = db.one("SELECT pgretention.request_create('access', %s)", [Jsonb({"phone": [PHONE]})])
    assert db.one("SELECT identifier_hashes FROM pgretention.subject_request WHERE id = %s", [rid2]) == hashes_before
    assert db.one("SELECT pgretention.field_decrypt(secret, 'contacts') FROM public.contact") == "ann@example.org"
    assert db.one("SELECT pgretention.decrypt_field(secret, 'contacts') FROM public.contact") == "ann@example.org"
    assert db.one("SELECT pgretention.field_decrypt(pgretention.field_encrypt('x', 'contacts'), 'contacts')") == "x"
    assert db.one("SELECT count(*) FROM pgretention.keyring WHERE purpose LIKE 'field:%%'") == 1
    # the same entity hash for the same address
    db.execute("CALL pgretention.entity_run(%s)", [now])
    assert db.one("SELECT email FROM public.customer WHERE id = 2") == entity_hash
    # a destroyed key stays destroyed, a rotated one stays rotated
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="was destroyed"):
        db.execute("SELECT pgretention._epoch_key(%s)", [f"{year - 1}q3"])
    assert db.one("SELECT rotated_at IS NOT NULL FROM pgretention.anon_key WHERE epoch = %s", [f"{year - 1}q4"])


def test_new_keys_are_created_on_first_use_and_audited(installed: DB) -> None:
    db = installed
    assert db.all("SELECT purpose FROM pgretention.keyring ORDER BY 1") == [("entity",)]
    key = db.one("SELECT pgretention._epoch_key('2026q3')")
    assert len(key) == 32 and db.one("SELECT pgretention._epoch_key('2026q3')") == key
    db.one("SELECT pgretention.field_encrypt('x', 'notes')")
    db.one("SELECT pgretention._identifier_hash('phone', %s)", [PHONE])
    assert [r[0] for r in db.all("SELECT purpose FROM pgretention.keyring ORDER BY 1")] == [
        "anon:2026q3", "entity", "field:notes", "subject"]
    assert db.all("SELECT object FROM pgretention.audit_log WHERE action = 'key.create' ORDER BY id") == [
        ("2026q3",), ("field:notes",)]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid epoch"):
        db.execute("SELECT pgretention.anon_key_rotate('2026-3')")


def test_no_routine_is_shadowed_by_a_type_name(installed: DB) -> None:
    """A table t has an array type _t: a routine named _t would be read as a cast of a single literal."""
    assert installed.all("SELECT p.proname FROM pg_proc p JOIN pg_type t ON t.typname = p.proname"
                         " AND t.typnamespace = p.pronamespace WHERE p.pronamespace = 'pgretention'::regnamespace") == []


def _routines(db: DB) -> set[str]:
    return {r[0] for r in db.all("SELECT p.oid::regprocedure::text FROM pg_proc p"
                                 " WHERE p.pronamespace = 'pgretention'::regnamespace")}


def test_replay_drops_what_it_did_not_create(installed: DB) -> None:
    """Routines the replay does not write (an earlier release's) are dropped; extension and site checks stay."""
    db = installed
    # the premise: CREATE OR REPLACE of an unchanged routine writes a new row version in its transaction
    with db.connect(autocommit=False) as conn:
        src = conn.execute("SELECT pg_get_functiondef('pgretention.version_info()'::regprocedure)").fetchone()
        assert src is not None
        conn.execute(src[0])
        assert conn.execute("SELECT xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text FROM pg_proc"
                            " WHERE oid = 'pgretention.version_info()'::regprocedure").fetchone() == (True,)
        conn.rollback()
    db.execute("CREATE FUNCTION pgretention._gone_in_this_release(p int) RETURNS int LANGUAGE sql AS 'SELECT p'")
    db.execute("CREATE PROCEDURE pgretention.gone_too() LANGUAGE sql AS 'SELECT 1'")
    db.execute("CREATE FUNCTION pgretention.report_check_zz_site(p_now timestamptz)"
               " RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)"
               " LANGUAGE sql AS $$ SELECT NULL::text, NULL, NULL, NULL, NULL, NULL::bigint WHERE false $$")
    before = _routines(db)
    installer.install(db.dsn, with_cron=False)
    after = _routines(db)
    assert before - after == {"pgretention._gone_in_this_release(integer)", "pgretention.gone_too()"}
    assert after - before == set()
    assert {"pgretention.report_check_zz_site(timestamp with time zone)", "pgretention.gen_random_bytes(integer)",
            "pgretention.hmac(bytea,bytea,text)"} <= after
