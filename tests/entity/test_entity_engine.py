"""Entity engine: row-level rules over the reference schema, hierarchies, notices, anonymisation,
exemptions, crash recovery and bad rules. Time is simulated through the reference time (p_now)."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgretention import installer
from tests.fix_db import DB, run_entities, simulate

UTC = timezone.utc
T0 = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def ref(installed: DB) -> DB:
    installer.install(installed.dsn, with_cron=False, reference_schema=True)
    simulate(installed)
    return installed


def account(db: DB, *, created: datetime, kind: str = "normal", parent: int | None = None,
            login: datetime | None = None, contacts: int = 2) -> int:
    """An account with a contact list, contacts, an e-mail content; returns its id."""
    with db.connect() as conn:
        row = conn.execute(
            "INSERT INTO crm.account (parent_id, account_type, name, email, created_at, last_login_at)"
            " VALUES (%s, %s, 'Name', 'a@example.org', %s, %s) RETURNING id", [parent, kind, created, login]).fetchone()
        assert row is not None
        aid = int(row[0])
        lst = conn.execute("INSERT INTO crm.contact_list (account_id, name) VALUES (%s, 'list') RETURNING id",
                           [aid]).fetchone()
        assert lst is not None
        for i in range(contacts):
            conn.execute("INSERT INTO crm.contact (account_id, list_id, email) VALUES (%s, %s, %s)",
                         [aid, lst[0], f"c{i}@example.org"])
        conn.execute("INSERT INTO crm.email_content (account_id, subject, body) VALUES (%s, 's', 'b')", [aid])
    return aid


def credit(db: DB, aid: int, bought: datetime, expires: datetime) -> None:
    db.execute("INSERT INTO crm.credit (account_id, bought_at, expires_at, amount) VALUES (%s, %s, %s, 10)",
               [aid, bought, expires])


def sent(db: DB, aid: int, at: datetime) -> None:
    db.execute("INSERT INTO crm.message_stat (account_id, channel, sent_at) VALUES (%s, 'sms', %s)", [aid, at])


def exists(db: DB, aid: int) -> bool:
    return bool(db.one("SELECT count(*) FROM crm.account WHERE id = %s", [aid]))


def owned(db: DB, aid: int) -> dict[str, int]:
    return {t: int(db.one(f"SELECT count(*) FROM crm.{t} WHERE account_id = %s", [aid]))  # noqa: S608
            for t in ("contact", "contact_list", "email_content", "message_stat", "credit")}


def audits(db: DB, action: str) -> list[dict[str, Any]]:
    return [r[0] for r in db.all("SELECT details FROM pgretention.audit_log WHERE action = %s ORDER BY id", [action])]


def test_plain_account_notice_then_deleted_and_credit_during_notice_keeps(ref: DB) -> None:
    a = account(ref, created=T0)
    credit(ref, a, T0 + timedelta(days=30), datetime(2022, 1, 1, tzinfo=UTC))
    sent(ref, a, datetime(2021, 6, 1, tzinfo=UTC))
    b = account(ref, created=T0)
    credit(ref, b, T0 + timedelta(days=30), datetime(2022, 1, 1, tzinfo=UTC))
    c = account(ref, created=T0)
    credit(ref, c, T0, datetime(2023, 6, 1, tzinfo=UTC))  # expires 2025-06-01

    # 17 days before the 24 months are over: both listed, nothing deleted
    res = run_entities(ref, datetime(2023, 12, 15, tzinfo=UTC))
    assert res["status"] == "ok"
    listed = ref.all("SELECT key, first_listed_at, deletion_from FROM pgretention.entity_notices"
                     " WHERE rule_name = 'accounts' ORDER BY key::bigint")
    assert [int(r[0]) for r in listed] == [a, b]
    assert listed[0][2] == datetime(2024, 1, 14, tzinfo=UTC)  # listed 15 Dec + 30 days notice
    assert exists(ref, a) and exists(ref, b) and exists(ref, c)
    assert audits(ref, "entity.notice")[-1]["listed"] == 2

    # b buys credit during the notice: its notice is cancelled
    credit(ref, b, datetime(2024, 1, 5, tzinfo=UTC), datetime(2025, 1, 5, tzinfo=UTC))
    run_entities(ref, datetime(2024, 1, 10, tzinfo=UTC))  # a expired, but its notice runs until 14 Jan
    assert exists(ref, a)
    assert [int(r[0]) for r in ref.all("SELECT key FROM pgretention.entity_notices")] == [a]
    assert audits(ref, "entity.notice")[-1]["cancelled"] == 1

    before = owned(ref, a)
    assert before == {"contact": 2, "contact_list": 1, "email_content": 1, "message_stat": 1, "credit": 1}
    res = run_entities(ref, datetime(2024, 1, 15, tzinfo=UTC))
    assert res["status"] == "ok" and res["totals"]["rows"] == 1
    assert not exists(ref, a)
    assert owned(ref, a) == {"contact": 0, "contact_list": 0, "email_content": 0, "message_stat": 0, "credit": 0}
    assert exists(ref, b) and owned(ref, b)["contact"] == 2
    assert exists(ref, c)
    deletes = audits(ref, "entity.delete")
    assert len(deletes) == 1 and deletes[0]["rows"] == 1
    assert deletes[0]["dependants"] == {"crm.contact": 2, "crm.contact_list": 1, "crm.email_content": 1,
                                        "crm.message_stat": 1}
    assert ref.one("SELECT count(*) FROM pgretention.entity_notice") == 0
    st = ref.all("SELECT rows_deleted, dependants_deleted, batches FROM pgretention.entity_status(%s)"
                 " WHERE rule_name = 'accounts'", [datetime(2024, 1, 15, tzinfo=UTC)])
    assert st == [(1, 5, 1)]
    assert ref.one("SELECT ok FROM pgretention.audit_verify()") is True
    # a second run finds nothing more to do
    assert run_entities(ref, datetime(2024, 1, 16, tzinfo=UTC))["totals"]["rows"] == 0


def test_hierarchy_resellers_and_sub_accounts(ref: DB) -> None:
    old = T0
    recent = datetime(2023, 11, 1, tzinfo=UTC)
    # active reseller with an inactive sub-account: the sub-account goes, the reseller stays
    r1 = account(ref, created=old, kind="reseller", login=recent)
    s1 = account(ref, created=old, kind="sub", parent=r1)
    # inactive reseller with an active sub-account (an SMS sent lately): nothing is lost
    r2 = account(ref, created=old, kind="reseller")
    s2 = account(ref, created=old, kind="sub", parent=r2, contacts=5)
    sent(ref, s2, recent)
    # three inactive levels: super-account -> reseller -> sub-account: all go, children first
    sup = account(ref, created=old, kind="super")
    r3 = account(ref, created=old, kind="reseller", parent=sup)
    s3 = account(ref, created=old, kind="sub", parent=r3)

    first = datetime(2023, 6, 1, tzinfo=UTC)
    plan = "SELECT rows_expired, kept_by_descendants, waiting_for_notice, rows_due FROM pgretention.entity_plan(%s, 'accounts')"
    assert ref.all(plan, [first]) == [(5, 1, 4, 0)]  # r2 is kept by s2
    run_entities(ref, first)
    assert ref.all(plan, [first + timedelta(days=31)]) == [(5, 1, 0, 4)]
    listed = {int(r[0]): r[1] for r in ref.all("SELECT key, parent_key FROM pgretention.entity_notices")}
    assert set(listed) == {s1, sup, r3, s3}  # r2 is kept alive by s2 and is not listed
    assert listed[s1] == str(r1) and listed[s3] == str(r3)  # listed per reseller
    assert all(exists(ref, x) for x in (r1, s1, r2, s2, sup, r3, s3))

    res = run_entities(ref, first + timedelta(days=31))
    assert res["status"] == "ok" and res["totals"]["rows"] == 4
    assert [x for x in (r1, s1, r2, s2, sup, r3, s3) if exists(ref, x)] == [r1, r2, s2]
    assert owned(ref, s2)["contact"] == 5 and owned(ref, s2)["message_stat"] == 1
    assert sum(d["rows"] for d in audits(ref, "entity.delete")) == 4
    # sub-account activity keeps the reseller; once the sub-account goes quiet both go, sub first
    res = run_entities(ref, recent + timedelta(days=24 * 31 + 40))
    assert res["totals"]["rows"] == 0  # listed only now
    res = run_entities(ref, recent + timedelta(days=24 * 31 + 71))
    assert res["totals"]["rows"] == 3
    assert [x for x in (r1, r2, s2) if exists(ref, x)] == []


def test_customer_personal_data_anonymised_after_ten_years(ref: DB) -> None:
    now = datetime(2035, 3, 1, 12, tzinfo=UTC)
    ended = {"gone": now - timedelta(days=365 * 10 + 2 + 1), "kept": now - timedelta(days=365 * 10 + 2 - 1),
             "current": None}
    # 10 years before 2035-03-01 12:00 is 2025-03-01 12:00 = now - 3652 days (two leap days)
    assert now - timedelta(days=3652) == datetime(2025, 3, 1, 12, tzinfo=UTC)
    ids = {}
    for k, end in ended.items():
        ids[k] = ref.one("INSERT INTO crm.customer (name, address, email, phone, birth_date, language,"
                         " relationship_ended_at) VALUES ('N', 'Street 1', %s, '+31600000000', '1980-01-01', 'nl', %s)"
                         " RETURNING id", [f"{k}@example.org", end])
    res = run_entities(ref, now, "customers")
    assert res["status"] == "ok"
    rows = {r[0]: r[1:] for r in ref.all("SELECT id, name, address, email, phone, birth_date, language"
                                         " FROM crm.customer")}
    gone = rows[ids["gone"]]
    assert gone[0] is None and gone[1] is None and gone[3] is None and gone[4] is None and gone[5] is None
    assert len(gone[2]) == 64 and "@" not in gone[2]  # keyed hash of the e-mail address
    assert rows[ids["kept"]][0] == "N" and rows[ids["kept"]][2] == "kept@example.org"
    assert rows[ids["current"]][0] == "N"
    assert ref.one("SELECT count(*) FROM crm.customer") == 3
    anon = audits(ref, "entity.anonymise")
    assert len(anon) == 1 and anon[0]["rows"] == 1
    # the same address always hashes alike (same key), and a second run changes nothing
    run_entities(ref, now + timedelta(days=1), "customers")
    assert ref.one("SELECT email FROM crm.customer WHERE id = %s", [ids["gone"]]) == gone[2]
    # one day later it is the other customer's turn; the first one is not anonymised twice
    assert ref.one("SELECT name FROM crm.customer WHERE id = %s", [ids["kept"]]) is None
    assert ref.one("SELECT email FROM crm.customer WHERE id = %s", [ids["kept"]]) == ref.one(
        "SELECT encode(pgretention.hmac(convert_to('kept@example.org', 'UTF8'), hash_key, 'sha256'), 'hex')"
        " FROM pgretention.entity_hash_key")
    assert ref.one("SELECT rows_anonymised FROM pgretention.entity_rule WHERE rule_name = 'customers'") == 2
    assert [a["rows"] for a in audits(ref, "entity.anonymise")] == [1, 1]


def test_consent_proofs_and_legal_documents(ref: DB) -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)
    old, young = datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    for given, legal in ((old, False), (old, True), (young, False), (old, False)):
        ref.execute("INSERT INTO crm.consent_proof (subject_hash, purpose, given_at, is_legal_document)"
                    " VALUES (encode(sha256('x'), 'hex'), 'marketing', %s, %s)", [given, legal])
        ref.execute("INSERT INTO crm.website_submission (name, message, submitted_at, is_legal_document)"
                    " VALUES ('n', 'm', %s, %s)", [given, legal])
    plan = ref.all("SELECT rule_name, rows_expired, rows_due FROM pgretention.entity_plan(%s)"
                   " WHERE rule_name IN ('consent_proofs', 'website_data') ORDER BY 1", [now])
    assert plan == [("consent_proofs", 2, 2), ("website_data", 2, 2)]
    assert ref.one("SELECT count(*) FROM crm.consent_proof") == 4  # plan changed nothing
    run_entities(ref, now)
    assert ref.all("SELECT given_at, is_legal_document FROM crm.consent_proof ORDER BY id") == [
        (old, True), (young, False)]
    assert ref.one("SELECT count(*) FROM crm.website_submission WHERE is_legal_document") == 1
    assert ref.one("SELECT count(*) FROM crm.website_submission") == 2
    # legal documents are never removed, however late
    run_entities(ref, datetime(2090, 1, 1, tzinfo=UTC))
    assert ref.one("SELECT count(*) FROM crm.consent_proof WHERE is_legal_document") == 1
    assert ref.one("SELECT count(*) FROM crm.website_submission WHERE is_legal_document") == 1
    exempt = ref.one("SELECT rows_exempt FROM pgretention.entity_status(%s) WHERE rule_name = 'consent_proofs'", [now])
    assert exempt == 1


def test_killed_run_is_finished_by_the_next_with_exact_counts(ref: DB) -> None:
    """pg_terminate_backend in the middle of a run: committed batches stay, the rest is done next time."""
    n_old, n_live = 1500, 300
    ref.execute("SELECT pgretention.entity_rule_drop('accounts')")
    ref.execute("SELECT pgretention.entity_rule_create('inactive', 'crm.account', 'id',"
                " '[{\"column\": \"created_at\"}, {\"column\": \"last_login_at\"}]', '24 months',"
                " p_dependants => '[{\"table\": \"crm.contact\", \"fk\": \"account_id\"}]', p_parent_column => 'parent_id')")
    ref.execute("SELECT pgretention.setting_set('entity_batch_max', '20')")
    ref.execute("SELECT pgretention.setting_set('entity_batch_target', '1ms')")
    with ref.connect() as conn:
        conn.execute("INSERT INTO crm.account (id, created_at, last_login_at) SELECT g, %s,"
                     " CASE WHEN g > %s THEN %s END FROM generate_series(1, %s) g",
                     [T0, n_old, datetime(2023, 1, 1, tzinfo=UTC), n_old + n_live])
        conn.execute("INSERT INTO crm.contact (account_id, email) SELECT g, 'x' FROM generate_series(1, %s) g,"
                     " generate_series(1, 3)", [n_old + n_live])
        # a trigger slows every deleted contact down a little, so the run is long enough to be killed
        conn.execute("CREATE FUNCTION crm.slow() RETURNS trigger LANGUAGE plpgsql AS"
                     " $$ BEGIN PERFORM pg_sleep(0.0005); RETURN OLD; END $$")
        conn.execute("CREATE TRIGGER slow BEFORE DELETE ON crm.contact FOR EACH ROW EXECUTE FUNCTION crm.slow()")
    at = datetime(2024, 6, 1, tzinfo=UTC)
    errors: list[BaseException] = []
    pid: list[int] = []

    def runner() -> None:
        try:
            with ref.connect() as conn:
                pid.append(conn.info.backend_pid)
                conn.execute("CALL pgretention.entity_run(p_now => %s, p_runner => 'test')", [at])
        except psycopg.OperationalError as exc:
            errors.append(exc)

    th = threading.Thread(target=runner)
    th.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (ref.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'entity.delete'") or 0) >= 5:
            break
        time.sleep(0.05)
    assert ref.one("SELECT pg_terminate_backend(%s)", [pid[0]]) is True
    th.join(30)
    assert errors, "the run was expected to be killed"
    left = ref.one("SELECT count(*) FROM crm.account WHERE id <= %s", [n_old])
    assert 0 < left < n_old
    # every committed batch is complete: no account without its contacts removed, or the reverse
    assert ref.one("SELECT count(*) FROM crm.contact c WHERE NOT EXISTS"
                   " (SELECT 1 FROM crm.account a WHERE a.id = c.account_id)") == 0
    assert ref.one("SELECT count(*) FROM crm.contact") == 3 * (left + n_live)
    killed_rows = sum(d["rows"] for d in audits(ref, "entity.delete"))
    assert killed_rows == n_old - left

    ref.execute("SELECT pgretention.setting_set('entity_batch_max', '2000')")
    ref.execute("SELECT pgretention.setting_set('entity_batch_target', '50ms')")
    res = run_entities(ref, at)
    assert res["status"] == "ok"
    assert res["totals"]["rows"] == left
    assert ref.one("SELECT count(*) FROM crm.account") == n_live
    assert ref.one("SELECT min(id) FROM crm.account") == n_old + 1
    assert ref.one("SELECT count(*) FROM crm.contact") == 3 * n_live
    assert sum(d["rows"] for d in audits(ref, "entity.delete")) == n_old
    assert ref.one("SELECT rows_deleted FROM pgretention.entity_rule WHERE rule_name = 'inactive'") == n_old
    assert ref.one("SELECT count(*) FROM pgretention.job_run WHERE message LIKE 'interrupted%%'") == 1
    assert ref.one("SELECT ok FROM pgretention.audit_verify()") is True


BAD_RULES = [
    ({"p_activity": [{"column": "last_seen_at"}]}, psycopg.errors.UndefinedColumn, "last_seen_at"),
    ({"p_activity": [{"table": "crm.credit", "fk": "account", "column": "expires_at"}]},
     psycopg.errors.UndefinedColumn, "account"),
    ({"p_activity": [{"table": "crm.nothing", "fk": "account_id", "column": "x"}]}, psycopg.errors.UndefinedTable,
     "crm.nothing"),
    ({"p_activity": [{"column": "name"}]}, psycopg.errors.DatatypeMismatch, "name"),
    ({"p_activity": [{"sql": "now()"}]}, psycopg.errors.InvalidParameterValue, "expected"),
    ({"p_activity": []}, psycopg.errors.InvalidParameterValue, "non-empty"),
    ({"p_period": "0 days"}, psycopg.errors.InvalidParameterValue, "must be positive"),
    ({"p_period": "soon"}, psycopg.errors.InvalidParameterValue, "period"),
    ({"p_key_column": "email"}, psycopg.errors.InvalidParameterValue, "unique"),
    ({"p_parent_column": "missing"}, psycopg.errors.UndefinedColumn, "missing"),
    ({"p_parent_column": "id"}, psycopg.errors.InvalidParameterValue, "cycle"),
    ({"p_exempt_column": "name"}, psycopg.errors.DatatypeMismatch, "boolean"),
    ({"p_dependants": [{"table": "crm.contact", "fk": "list"}]}, psycopg.errors.UndefinedColumn, "list"),
    ({"p_action": "archive"}, psycopg.errors.InvalidParameterValue, "archive"),
    ({"p_action": "anonymise", "p_anonymise": {"email": {"action": "hash"}}}, psycopg.errors.InvalidParameterValue,
     "NULL or a constant"),
    ({"p_action": "anonymise", "p_anonymise": {"created_at": {"action": "hash"}, "name": {"action": "null"}}},
     psycopg.errors.DatatypeMismatch, "hash"),
    ({"p_action": "anonymise", "p_anonymise": {"created_at": {"action": "null"}}}, psycopg.errors.InvalidParameterValue,
     "NOT NULL"),
    ({"p_table": "crm.account; DROP TABLE crm.contact"}, psycopg.errors.InvalidName, "semicolons"),
    ({"p_name": "Bad Name"}, psycopg.errors.InvalidName, "rule name"),
    ({"p_notice_period": "-1 day"}, psycopg.errors.InvalidParameterValue, "notice"),
]


def test_bad_rules_change_nothing(ref: DB) -> None:
    """Each bad rule: an error of the right kind naming the problem; no rule, no audit record."""
    account(ref, created=T0)
    before = ref.all("SELECT (SELECT count(*) FROM pgretention.entity_rule), (SELECT max(id) FROM pgretention.audit_log)")
    for change, error, text in BAD_RULES:
        args: dict[str, Any] = {"p_name": "r", "p_table": "crm.account", "p_key_column": "id",
                                "p_activity": [{"column": "created_at"}], "p_period": "24 months"}
        args.update(change)
        with pytest.raises(error) as exc, ref.connect() as conn:
            conn.execute("SELECT pgretention.entity_rule_create(" + ", ".join(f"{k} => %s" for k in args) + ")",
                         [Jsonb(v) if isinstance(v, (list, dict)) else v for v in args.values()])
        assert text in str(exc.value), (change, str(exc.value))
    after = ref.all("SELECT (SELECT count(*) FROM pgretention.entity_rule), (SELECT max(id) FROM pgretention.audit_log)")
    assert after == before
    assert ref.one("SELECT count(*) FROM crm.account") == 1


def test_cycle_in_hierarchy_data_is_refused(ref: DB) -> None:
    a = account(ref, created=T0)
    b = account(ref, created=T0, parent=a)
    ref.execute("UPDATE crm.account SET parent_id = %s WHERE id = %s", [b, a])
    rules = ref.one("SELECT count(*) FROM pgretention.entity_rule")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="has a cycle"):
        ref.execute("SELECT pgretention.entity_rule_create('loop', 'crm.account', 'id', '[{\"column\": \"created_at\"}]',"
                    " '1 year', p_parent_column => 'parent_id')")
    assert ref.one("SELECT count(*) FROM pgretention.entity_rule") == rules
    # a cycle made after the rule was created deletes nothing of it
    res = run_entities(ref, datetime(2030, 1, 1, tzinfo=UTC), "accounts")
    assert res["status"] == "ok"
    assert exists(ref, a) and exists(ref, b)


def test_lock_waits_are_bounded_and_retried(ref: DB) -> None:
    """A long transaction holding a contact row: the batch gives up its lock wait, retries, finishes."""
    a = account(ref, created=T0)
    ref.execute("SELECT pgretention.entity_rule_drop('accounts')")
    ref.execute("SELECT pgretention.entity_rule_create('quick', 'crm.account', 'id', '[{\"column\": \"created_at\"}]',"
                " '1 year', p_dependants => '[{\"table\": \"crm.contact\", \"fk\": \"account_id\"}]')")
    blocker = ref.connect(autocommit=False)
    blocker.execute("SELECT * FROM crm.contact WHERE account_id = %s FOR UPDATE", [a])
    timer = threading.Timer(1.0, blocker.rollback)
    timer.start()
    t0 = time.monotonic()
    res = run_entities(ref, datetime(2022, 1, 1, tzinfo=UTC))
    timer.join()
    blocker.close()
    assert time.monotonic() - t0 >= 0.9
    assert res["status"] == "ok" and res["totals"]["rows"] == 1
    assert not exists(ref, a)
    assert len(audits(ref, "entity.delete")) == 1


def test_erase_account_now(ref: DB) -> None:
    a = account(ref, created=datetime(2026, 1, 1, tzinfo=UTC), contacts=3)
    sent(ref, a, datetime(2026, 1, 2, tzinfo=UTC))
    b = account(ref, created=T0)
    c = account(ref, created=T0, parent=b)
    assert ref.one("SELECT pgretention.entity_erase('accounts', %s)", [str(a)]) == 1 + 3 + 1 + 1 + 1
    assert not exists(ref, a) and owned(ref, a)["credit"] == 0
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        ref.execute("SELECT pgretention.entity_erase('accounts', %s)", [str(b)])
    assert exists(ref, b) and exists(ref, c)
    rec = audits(ref, "entity.erase")
    assert len(rec) == 1 and set(rec[0]) == {"rule", "key_sha256", "dependants"}
    assert rec[0]["key_sha256"] == hashlib.sha256(str(a).encode()).hexdigest()


def test_run_lock_shared_with_partition_run(ref: DB) -> None:
    """Another session's run: nothing done. Called inside a run of this session: runs, leaves it alone."""
    ref.execute("INSERT INTO crm.consent_proof (subject_hash, purpose, given_at) VALUES ('h', 'p', '2020-01-01')")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with ref.connect() as other:
        other.execute("SELECT pg_advisory_lock(hashtext('pgretention.run'))")
        runs = ref.one("SELECT count(*) FROM pgretention.job_run")
        ref.execute("CALL pgretention.entity_run(%s)", [at])
        assert ref.one("SELECT count(*) FROM pgretention.job_run") == runs
        assert ref.one("SELECT count(*) FROM crm.consent_proof") == 1
    with ref.connect() as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('pgretention.run'))")
        # the run of this session, as pgretention.run begins it (bound to this backend)
        outer = conn.execute("INSERT INTO pgretention.job_run (runner, reference_time, engine, backend_pid, backend_start)"
                             " SELECT 'test', %s, 'run', a.pid, a.backend_start FROM pg_stat_activity a"
                             " WHERE a.pid = pg_backend_pid() RETURNING id", [at]).fetchone()
        assert outer is not None
        conn.execute("CALL pgretention.entity_run(%s)", [at])
        assert conn.execute("SELECT status FROM pgretention.job_run WHERE id = %s", [outer[0]]).fetchone() == ("running",)
        assert conn.execute("SELECT count(*) FROM crm.consent_proof").fetchone() == (0,)
        # the lock is still held once by this session (the nested run released only its own hold)
        assert conn.execute("SELECT pg_advisory_unlock(hashtext('pgretention.run'))").fetchone() == (True,)
    assert ref.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


def test_anonymise_with_constant_dependants_and_exemption(ref: DB) -> None:
    """A plain table outside the reference schema: constant + null + hash, children deleted, exempt rows kept."""
    ref.execute("CREATE TABLE public.member (id text PRIMARY KEY, name text, country text NOT NULL, email varchar(200),"
                " left_on date, hold boolean)")
    ref.execute("CREATE TABLE public.member_note (id serial PRIMARY KEY, member_id text NOT NULL REFERENCES public.member,"
                " note text)")
    ref.execute("INSERT INTO public.member VALUES ('m1', 'Ann', 'NL', 'ann@x', '2020-01-01', false),"
                " ('m2', 'Bob', 'DE', 'bob@x', '2020-01-01', true), ('m3', 'Cy', 'BE', 'cy@x', '2024-01-01', null)")
    ref.execute("INSERT INTO public.member_note (member_id, note) VALUES ('m1', 'a'), ('m1', 'b'), ('m2', 'c'), ('m3', 'd')")
    ref.execute("SELECT pgretention.entity_rule_create('members', 'public.member', 'id', '[{\"column\": \"left_on\"}]',"
                " '2 years', 'anonymise', p_anonymise => %s, p_dependants => %s, p_exempt_column => 'hold')",
                [Jsonb({"name": {"action": "null"}, "country": {"action": "constant", "value": "--"},
                        "email": {"method": "pseudonym"}}),  # the anonymiser's vocabulary is accepted too
                 Jsonb([{"table": "public.member_note", "fk": "member_id"}])])
    assert ref.one("SELECT anonymise -> 'email' FROM pgretention.entity_rule WHERE rule_name = 'members'") == {
        "action": "hash"}
    res = run_entities(ref, datetime(2025, 1, 1, tzinfo=UTC), "members")
    assert res["status"] == "ok" and res["totals"]["rows"] == 1
    rows = ref.all("SELECT id, name, country, length(email) FROM public.member ORDER BY id")
    assert rows == [("m1", None, "--", 64), ("m2", "Bob", "DE", 5), ("m3", "Cy", "BE", 4)]
    assert ref.all("SELECT member_id, count(*) FROM public.member_note GROUP BY 1 ORDER BY 1") == [("m2", 1), ("m3", 1)]
    rec = audits(ref, "entity.anonymise")
    assert len(rec) == 1 and rec[0]["dependants"] == {"public.member_note": 2}
    assert run_entities(ref, datetime(2025, 2, 1, tzinfo=UTC), "members")["totals"]["rows"] == 0
