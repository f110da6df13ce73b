"""The SQL API by engine: old names as thin wrappers of the new, one "lock not granted" convention,
settings validated by their kind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.fix_db import DB, simulate

OLD_NEW = [
    ("create_table", "table_create"), ("manage_table", "table_manage"), ("release_table", "table_release"),
    ("add_class", "class_add"), ("set_class", "class_set"), ("assign_member", "member_assign"),
    ("set_partition_interval", "table_set_interval"), ("create_entity_rule", "entity_rule_create"),
    ("drop_entity_rule", "entity_rule_drop"), ("erase_entity", "entity_erase"), ("run_entities", "entity_run"),
    ("anon_set_rule", "anon_rule_set"), ("run_anonymiser", "anon_run"), ("add_rollup", "rollup_add"),
    ("encrypt_field", "field_encrypt"), ("decrypt_field", "field_decrypt"),
    ("register_subject_table", "subject_table_register"), ("register_tenant", "tenant_register"),
    ("create_unrestricted_view", "restriction_view_create"), ("verify_audit", "audit_verify"),
    ("set_setting", "setting_set"), ("unadopt", "adopt_undo"), ("overdue_requests_at", "request_overdue"),
]

ROUTINE = ("SELECT p.oid, pg_get_function_identity_arguments(p.oid), pg_get_function_arguments(p.oid),"
           " pg_get_function_result(p.oid), p.prokind, l.lanname, p.prosecdef, p.proacl::text,"
           " obj_description(p.oid, 'pg_proc'), p.prosrc, p.proargtypes::regtype[]::text[]"
           " FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
           " WHERE p.pronamespace = 'pgretention'::regnamespace AND p.proname = %s")


@pytest.mark.parametrize("old,new", OLD_NEW, ids=[o for o, _ in OLD_NEW])
def test_old_name_is_a_thin_wrapper_of_the_new(installed: DB, old: str, new: str) -> None:
    """Same arguments, result and grants; deprecated; and a call of the old name reaches the new one."""
    (o,) = installed.all(ROUTINE, [old])
    (n,) = installed.all(ROUTINE, [new])
    assert o[1:5] == n[1:5]  # arguments (with names and defaults), result, function or procedure
    assert o[7] == n[7] and o[7] is not None  # the same grants
    assert o[5] == ("plpgsql" if o[4] == "p" else "sql") and o[6] is False  # SECURITY INVOKER
    assert o[8] == f"deprecated: use pgretention.{new}"
    assert f"pgretention.{new}(" in o[9]
    # replace the new routine by a stub (in a transaction that is rolled back): the old name reaches it
    args = ", ".join(f"NULL::{t}" for t in o[10])
    with installed.connect(autocommit=False) as conn:
        kind, returns = ("PROCEDURE", "") if n[4] == "p" else ("FUNCTION", f" RETURNS {n[3]}")
        conn.execute(f"CREATE OR REPLACE {kind} pgretention.{new}({n[2]}){returns} LANGUAGE plpgsql"
                     f" AS $$BEGIN RAISE EXCEPTION 'reached {new}'; END$$")
        call = f"CALL pgretention.{old}({args})" if n[4] == "p" else f"SELECT * FROM pgretention.{old}({args})"  # noqa: S608
        with pytest.raises(psycopg.errors.RaiseException) as exc:
            conn.execute(call)
        assert exc.value.diag.message_primary == f"reached {new}"
        assert f"function pgretention.{new}(" in (exc.value.diag.context or "")
        conn.rollback()
    # rolled back: the new routine is itself again
    assert installed.all(ROUTINE, [new]) == [n]


def test_old_and_new_names_do_the_same(installed: DB) -> None:
    db = installed
    cols = "id bigint, region text, t timestamptz NOT NULL"
    classes = Jsonb({"eu": {"drop_after": "30 days"}, "intl": {"drop_after": "60 days"}})
    db.execute("SELECT pgretention.create_table('public.a', %s, 't', '1 day', %s, p_class_column => 'region',"
               " p_default_class => 'intl')", [cols, classes])
    db.execute("SELECT pgretention.table_create('public.b', %s, 't', '1 day', %s, p_class_column => 'region',"
               " p_default_class => 'intl')", [cols, classes])
    for name, (add, assign, set_) in {"a": ("add_class", "assign_member", "set_class"),
                                      "b": ("class_add", "member_assign", "class_set")}.items():
        db.execute(f"SELECT pgretention.{add}('public.{name}', 'us', '90 days')")  # noqa: S608 - fixed names
        db.execute(f"SELECT pgretention.{assign}('public.{name}', 'US', 'us')")  # noqa: S608
        db.execute(f"SELECT pgretention.{set_}('public.{name}', 'us', '120 days')")  # noqa: S608
    assert db.all("SELECT m.table_name, c.class_name, c.drop_after::text, k.value FROM pgretention.retention_class c"
                  " JOIN pgretention.managed_table m ON m.id = c.table_id LEFT JOIN pgretention.class_member k"
                  " ON k.table_id = c.table_id AND k.class_name = c.class_name WHERE c.class_name = 'us'"
                  " ORDER BY 1") == [("a", "us", "120 days", "US"), ("b", "us", "120 days", "US")]
    assert db.all("SELECT action, count(*) FROM pgretention.audit_log WHERE object IN ('public.a', 'public.b')"
                  " GROUP BY 1 ORDER BY 1") == [("class.add", 2), ("class.change", 2), ("member.assign", 2),
                                                 ("table.create", 2)]


# -- one "lock not granted" convention: NULL, and nothing changed ------------------------------------
@contextmanager
def held(db: DB, statement: str) -> Iterator[None]:
    """Another session holds the locks ``statement`` takes, until the block ends."""
    with db.connect(autocommit=False) as other:
        other.execute(statement)
        yield
        other.rollback()


def state(db: DB) -> tuple[Any, ...]:
    return (db.one("SELECT count(*) FROM pgretention.audit_log"),
            db.all("SELECT inhrelid::regclass::text FROM pg_inherits ORDER BY 1"),
            db.all("SELECT id, state FROM pgretention.partition_op ORDER BY id"),
            db.all("SELECT id, state FROM pgretention.anon_op ORDER BY id"),
            db.one("SELECT count(*) FROM public.cdr"))


@pytest.fixture
def cdr(installed: DB) -> DB:
    db = installed
    simulate(db)
    db.execute("SELECT pgretention.table_create('public.cdr', 'id bigint, started_at timestamptz, caller text',"
               " 'started_at', '1 day', %s, p_start => now() - interval '10 days', p_premake => 2,"
               " p_null_time => 'purge')", [Jsonb({"all": {"drop_after": "3 days", "anonymise_after": "1 day"}})])
    db.execute("INSERT INTO cdr SELECT g, now() - g * interval '1 hour', 'x' || g FROM generate_series(1, 200) g")
    db.execute("INSERT INTO cdr VALUES (0, NULL, 'no time')")  # in the default partition, purged (p_null_time)
    return db


def test_lock_bounded_steps_return_null_and_change_nothing(cdr: DB) -> None:
    db = cdr
    now = datetime.now(timezone.utc)
    leaf = db.one("SELECT leaf::text FROM pgretention._expired_leaves(1, 'all', %s) LIMIT 1", [now])
    default = db.one("SELECT leaf::text FROM pgretention._leaves(1, 'all') WHERE is_default")
    before = state(db)
    with held(db, "SELECT count(*) FROM public.cdr"):  # a long report: ACCESS SHARE on every partition
        assert db.one("SELECT pgretention._detach_leaf(1, 'all', %s::regclass, %s, NULL, 1)", [leaf, now]) is None
        assert db.one("SELECT pgretention._premake(1, 'all', %s)", [now + timedelta(days=10)]) is None
        assert state(db) == before
    with held(db, f"LOCK TABLE {default} IN SHARE MODE"):  # deletes wait, reads do not
        assert db.one("SELECT pgretention._purge_default_batch(1, 'all', %s, 100)", [now]) is None
        assert state(db) == before
    # the same steps with nobody in the way: their results
    op = db.one("SELECT pgretention._detach_leaf(1, 'all', %s::regclass, %s, NULL, 1)", [leaf, now])
    assert op > 0 and db.one("SELECT state FROM pgretention.partition_op WHERE id = %s", [op]) == "detached"
    before = state(db)
    with held(db, f"SELECT count(*) FROM {leaf}"):  # noqa: S608 - somebody still reads the detached partition
        assert db.one("SELECT pgretention._finish_op(%s)", [op]) is None
        assert state(db) == before and db.one("SELECT to_regclass(%s) IS NOT NULL", [leaf])
    assert db.one("SELECT pgretention._finish_op(%s)", [op]) is True
    assert db.one("SELECT to_regclass(%s)", [leaf]) is None
    assert db.one("SELECT pgretention._purge_default_batch(1, 'all', %s, 100)", [now]) == 1
    assert db.one("SELECT pgretention._premake(1, 'all', %s)", [now + timedelta(days=10)]) > 0


def test_anonymiser_swap_returns_null_under_a_held_lock(cdr: DB) -> None:
    db = cdr
    db.execute("SELECT pgretention.anon_rule_set('public.cdr', 'caller', 'redact')")
    leaf = db.one("SELECT leaf::text FROM pgretention._anon_due(1, 'all', now()) ORDER BY lower_abs DESC LIMIT 1")
    op = db.one("SELECT pgretention._anon_prepare(1, 'all', %s::regclass, now())", [leaf])
    db.execute("SELECT pgretention._anon_copy(%s)", [op])
    before = state(db)
    with held(db, "SELECT count(*) FROM public.cdr"):
        assert db.one("SELECT pgretention._anon_swap(%s)", [op]) is None
        assert state(db) == before
    assert db.one("SELECT pgretention._anon_swap(%s)", [op]) is True
    assert db.one("SELECT pgretention._anon_finish(%s)", [op]) is True
    assert db.one(f"SELECT count(*) FROM {leaf} WHERE caller <> '[redacted]'") == 0  # noqa: S608 - a partition


def test_entity_batch_returns_null_under_a_held_lock(installed: DB) -> None:
    db = installed
    db.execute("CREATE TABLE public.account (id bigint PRIMARY KEY, last_at timestamptz);"
               " CREATE TABLE public.note (account_id bigint, body text);"
               " INSERT INTO public.account SELECT g, now() - interval '3 years' FROM generate_series(1, 5) g;"
               " INSERT INTO public.note SELECT g, 'n' FROM generate_series(1, 5) g")
    rule = db.one("SELECT pgretention.entity_rule_create('accounts', 'public.account', 'id',"
                  " '[{\"column\": \"last_at\"}]', '2 years', p_dependants => '[{\"table\": \"public.note\","
                  " \"fk\": \"account_id\"}]')")
    assert db.one("SELECT due FROM pgretention._entity_prepare(%s, now())", [rule]) == 5
    with held(db, "LOCK TABLE public.note IN SHARE MODE"):
        assert db.all("SELECT picked, done FROM pgretention._entity_batch(%s, now(), 0, 100, NULL)", [rule]) == [
            (None, None)]
    assert db.one("SELECT count(*) FROM public.account") == 5 and db.one("SELECT count(*) FROM public.note") == 5
    assert db.one("SELECT count(*) FROM pgretention.entity_work WHERE pass = 0") == 5
    assert db.one("SELECT rows_deleted + batches FROM pgretention.entity_rule") == 0
    assert db.all("SELECT picked, done FROM pgretention._entity_batch(%s, now(), 0, 100, NULL)", [rule]) == [(5, 5)]
    assert db.one("SELECT count(*) FROM public.account") == 0 and db.one("SELECT count(*) FROM public.note") == 0


def test_run_retries_a_busy_step_then_leaves_it_for_the_next_run(cdr: DB) -> None:
    db = cdr
    db.execute("SELECT pgretention.class_set('public.cdr', 'all', '400 days')")  # nothing but the default to purge
    db.execute("SELECT pgretention.setting_set('max_lock_wait_total', '1s')")
    default = db.one("SELECT format('%I.%I', leaf_schema, leaf_name) FROM pgretention._leaves(1, 'all') WHERE is_default")
    notices: list[str] = []
    release = threading.Event()

    def hold() -> None:
        with db.connect(autocommit=False) as other:
            other.execute(f"LOCK TABLE {default} IN SHARE MODE")  # deletes wait, reads do not
            locked.set()
            release.wait(30)
            other.rollback()

    locked = threading.Event()
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        with db.connect() as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            conn.execute("CALL pgretention.run(p_runner => 'test')")
    finally:
        release.set()
        holder.join()
    status, summary = db.all("SELECT status, summary FROM pgretention.job_run ORDER BY id DESC LIMIT 1")[0]
    assert status == "partial" and summary["totals"] == {"partitions_dropped": 0, "partitions_deferred": 1,
                                                          "rows_deleted": 0}
    busy = [n for n in notices if "busy after" in n]
    assert len(busy) == 1 and busy[0].startswith(f"pgretention: {default} busy after ")
    assert busy[0].endswith(" lock attempts; left for the next run")
    assert db.one("SELECT count(*) FROM cdr WHERE started_at IS NULL") == 1
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'default.purge'") == 0
    db.execute("CALL pgretention.run(p_runner => 'test')")
    assert db.one("SELECT status FROM pgretention.job_run ORDER BY id DESC LIMIT 1") == "ok"
    assert db.one("SELECT count(*) FROM cdr WHERE started_at IS NULL") == 0
    assert db.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'default.purge'") == 1


# -- settings with a kind ------------------------------------------------------------------------------
KINDS = {"lock_timeout": "interval", "lock_retries": "int", "retry_backoff_max": "interval",
         "max_lock_wait_total": "interval", "batch_size": "int", "schedule": "cron", "schedule_max_gap": "interval",
         "job_history_keep": "interval", "audit_keep": "interval",
         "entity_batch_target": "interval", "entity_batch_max": "int", "entity_max_passes": "int"}

BAD_VALUES = [
    ("batch_size", "0", "must be a positive integer"),
    ("lock_retries", "12x", "must be a positive integer"),
    ("allow_future_reference_time", "on", "no longer exists"),
    ("lock_timeout", "soon", "invalid setting lock_timeout 'soon'"),
    ("job_history_keep", "-1 day", "must be positive"),
    ("schedule", "* * *", "must be a cron schedule of five fields"),
    ("nosuch", "1", 'pgretention setting "nosuch" does not exist'),
    ("batch_size", None, 'setting "batch_size" cannot be NULL'),
]


def test_every_setting_has_its_kind(installed: DB) -> None:
    assert dict(installed.all("SELECT name, kind FROM pgretention.setting")) == KINDS


@pytest.mark.parametrize("name,value,message", BAD_VALUES, ids=[f"{n}={v}" for n, v, _ in BAD_VALUES])
def test_setting_values_are_checked_by_kind(installed: DB, name: str, value: str | None, message: str) -> None:
    before = installed.all("SELECT name, value FROM pgretention.setting ORDER BY name")
    audit = installed.one("SELECT count(*) FROM pgretention.audit_log")
    with pytest.raises(psycopg.Error, match=message):
        installed.execute("SELECT pgretention.setting_set(%s, %s)", [name, value])
    assert installed.all("SELECT name, value FROM pgretention.setting ORDER BY name") == before
    assert installed.one("SELECT count(*) FROM pgretention.audit_log") == audit


def test_good_setting_values_are_set_and_audited(installed: DB) -> None:
    for name, value in (("batch_size", "100"), ("entity_max_passes", "8"), ("lock_timeout", "50ms"),
                        ("schedule", "*/15 * * * *"), ("audit_keep", "30 days")):
        installed.execute("SELECT pgretention.setting_set(%s, %s)", [name, value])
        assert installed.one("SELECT value FROM pgretention.setting WHERE name = %s", [name]) == value
    assert installed.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'setting.change'") == 5
