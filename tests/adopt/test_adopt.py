"""Online adoption of plain tables shaped like real telephony, SMS-gateway and e-mail products."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from tests.fix_catalog import diff, snapshot
from tests.fix_db import DB, run

UTC = timezone.utc


class Writers:
    """Connections inserting with the application's own INSERT statement while adoption runs."""

    def __init__(self, db: DB, statement: str, params: Callable[[int, int], list[Any]], n: int = 4) -> None:
        self.db, self.statement, self.params, self.n = db, statement, params, n
        self.stop = threading.Event()
        self.ok = [0] * n
        self.failed: list[str] = []
        self.longest = 0.0
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(n)]

    def _work(self, i: int) -> None:
        with self.db.connect() as conn:
            k = 0
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    conn.execute(self.statement, self.params(i, k))
                    self.ok[i] += 1
                except psycopg.Error as exc:
                    self.failed.append(str(exc).splitlines()[0])
                self.longest = max(self.longest, time.monotonic() - t0)
                k += 1
                time.sleep(0.002)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    @property
    def inserted(self) -> int:
        return sum(self.ok)


def audit(db: DB, action: str) -> list[tuple[Any, ...]]:
    return db.all("SELECT object, details, outcome FROM pgretention.audit_log WHERE action = %s ORDER BY id", [action])


def snap(db: DB) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as conn:
        return snapshot(conn)


def relkind(db: DB, name: str) -> str | None:
    return db.one("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", [name])  # type: ignore[no-any-return]


# -- telephony switch: identity key, reserved-word columns, trigger, view, grants, owner, comment,
#    publication; 4 connections insert throughout ---------------------------------------------------
TELEPHONY_DDL = """
CREATE ROLE switch_app LOGIN;
CREATE ROLE billing_reader;
CREATE TABLE public.calls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "from" text NOT NULL,
    "to" text NOT NULL,
    "user" text,
    started_at timestamptz NOT NULL DEFAULT now(),
    duration_s int CHECK (duration_s >= 0),
    cost_class text
);
CREATE INDEX calls_started_idx ON public.calls (started_at);
CREATE INDEX calls_from_idx ON public.calls ("from") WHERE "from" IS NOT NULL;
COMMENT ON TABLE public.calls IS 'CDRs written by the switch';
COMMENT ON COLUMN public.calls."from" IS 'calling number';
CREATE FUNCTION public.calls_classify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.cost_class := CASE WHEN NEW."to" LIKE '+31%' THEN 'national' ELSE 'intl' END; RETURN NEW; END $$;
CREATE TRIGGER calls_classify BEFORE INSERT ON public.calls FOR EACH ROW EXECUTE FUNCTION public.calls_classify();
CREATE VIEW public.calls_today AS SELECT id, "from", "to", started_at, cost_class FROM public.calls;
ALTER TABLE public.calls OWNER TO switch_app;
ALTER VIEW public.calls_today OWNER TO switch_app;
GRANT SELECT ON public.calls TO billing_reader;
INSERT INTO public.calls ("from", "to", "user", started_at, duration_s)
SELECT '+3120' || i, CASE WHEN i % 3 = 0 THEN '+4930' ELSE '+3110' END || i, 'u' || (i % 50),
       now() - (i % 4000) * interval '1 hour', i % 600
FROM generate_series(1, 20000) i;
"""
APP_INSERT = 'INSERT INTO public.calls ("from", "to", "user", duration_s) VALUES (%s, %s, %s, %s)'


def test_telephony_cdr_table_adopted_while_switch_inserts(engine: DB) -> None:
    engine.execute(TELEPHONY_DDL)
    try:
        before = engine.one("SELECT count(*) FROM public.calls")
        with Writers(engine, APP_INSERT, lambda i, k: [f"+3120{i}{k}", f"+3110{k}", "app", k % 60]) as w:
            engine.execute("CALL pgretention.adopt('public.calls', 'started_at', '90 days', p_key => 'local')")
            time.sleep(0.3)
        assert w.failed == []
        assert w.inserted > 0
        # every row is there and readable through the same name, the view and the app's role
        assert engine.one("SELECT count(*) FROM public.calls") == before + w.inserted
        assert engine.one("SELECT count(*) FROM public.calls_today") == before + w.inserted
        assert relkind(engine, "public.calls") == "p"
        assert engine.one("SELECT count(*) FROM public.calls_adopted") == before + w.inserted
        assert engine.one("SELECT attidentity::text FROM pg_attribute WHERE attrelid = 'public.calls'::regclass"
                          " AND attname = 'id'") == "a"
        assert engine.one("SELECT count(DISTINCT id) = count(*) FROM public.calls")
        # trigger, owner, grants, comments, publication kept
        assert engine.one("SELECT count(*) FROM public.calls WHERE cost_class IS NULL") == 0
        assert engine.one("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.calls'::regclass") == "switch_app"
        assert engine.one("SELECT has_table_privilege('billing_reader', 'public.calls', 'SELECT')")
        assert engine.one("SELECT obj_description('public.calls'::regclass, 'pg_class')") == "CDRs written by the switch"
        assert engine.one("SELECT col_description('public.calls'::regclass, 2)") == "calling number"
        # the application's statements work unchanged, as its own role; identity keeps increasing
        max_before = engine.one("SELECT max(id) FROM public.calls")
        with psycopg.connect(engine.dsn_as("switch_app"), autocommit=True) as app:
            new_id = app.execute(APP_INSERT + " RETURNING id, cost_class", ["+3120", "+4930", "x", 5]).fetchone()
            assert new_id is not None and new_id[0] > max_before and new_id[1] == "intl"
            assert app.execute("SELECT count(*) FROM public.calls WHERE \"user\" = 'x'").fetchone() == (1,)
        # catalog: a managed table, an adoption, one audit record for it
        assert engine.one("SELECT state FROM pgretention.adoption") == "adopted"
        assert engine.one("SELECT count(*) FROM pgretention.managed_table WHERE table_name = 'calls'") == 1
        assert len(audit(engine, "table.adopt")) == 1
        status = engine.all("SELECT partitions, oldest_row_age IS NOT NULL FROM pgretention.status()")
        assert status and status[0][0] >= 2 and status[0][1]
        # expired rows go at the next run, in batches from the historical partition
        now = datetime.now(UTC)
        total = engine.one("SELECT count(*) FROM public.calls")
        expired = engine.one("SELECT count(*) FROM public.calls WHERE started_at < %s", [now - timedelta(days=90)])
        assert expired > 0
        res = run(engine, now)
        assert res["status"] == "ok", res["errors"]
        assert engine.one("SELECT count(*) FROM public.calls WHERE started_at < %s", [now - timedelta(days=90)]) == 0
        assert engine.one("SELECT count(*) FROM public.calls") == total - expired
        assert sum(d["rows"] for _, d, _ in audit(engine, "adopt.purge")) == expired
        # unadopt gives back a plain table with every row, trigger, view, grants, identity
        remaining = engine.one("SELECT count(*) FROM public.calls")
        assert engine.one("SELECT pgretention.adopt_undo('public.calls')") == remaining
        assert relkind(engine, "public.calls") == "r"
        assert engine.one("SELECT to_regclass('public.calls_adopted')") is None
        assert engine.one("SELECT count(*) FROM public.calls_today") == remaining
        assert engine.one("SELECT has_table_privilege('billing_reader', 'public.calls', 'SELECT')")
        assert engine.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.calls'::regclass AND NOT tgisinternal") == 1
        assert engine.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.calls'::regclass AND contype = 'p'") == 1
        assert engine.one("SELECT attidentity::text FROM pg_attribute WHERE attrelid = 'public.calls'::regclass"
                          " AND attname = 'id'") == "a"
        assert engine.one("SELECT count(*) FROM pgretention.managed_table") == 0
        max_now = engine.one("SELECT max(id) FROM public.calls")
        with psycopg.connect(engine.dsn_as("switch_app"), autocommit=True) as app:
            row = app.execute(APP_INSERT + " RETURNING id", ["+3120", "+3110", "y", 1]).fetchone()
            assert row is not None and row[0] > max_now
        assert len(audit(engine, "table.unadopt")) == 1
    finally:
        engine.execute("DROP OWNED BY switch_app, billing_reader CASCADE;"
                       " DROP ROLE switch_app; DROP ROLE billing_reader")


# -- SMS gateway: no primary key, nullable local-time timestamp, serial id ---------------------------
SMS_DDL = """
CREATE TABLE public.sms_log (
    msg_id serial,
    sender varchar(20),
    recipient varchar(20),
    body_len int,
    submitted timestamp without time zone
);
INSERT INTO public.sms_log (sender, recipient, body_len, submitted)
SELECT 'GW' || (i % 7), '+316' || i, i % 160,
       (now() AT TIME ZONE 'Europe/Amsterdam') - (i % 1200) * interval '1 hour'
FROM generate_series(1, 10000) i;
"""


def test_sms_gateway_without_key_with_local_time(engine: DB) -> None:
    engine.execute(SMS_DDL)
    before = engine.one("SELECT count(*) FROM public.sms_log")
    insert = ("INSERT INTO public.sms_log (sender, recipient, body_len, submitted)"
              " VALUES (%s, %s, %s, now() AT TIME ZONE 'Europe/Amsterdam')")
    with Writers(engine, insert, lambda i, k: ["GW", f"+31{i}{k}", k]) as w:
        engine.execute("CALL pgretention.adopt('sms_log', 'submitted', '30 days', p_interval => '1 week',"
                       " p_time_zone => 'Europe/Amsterdam')")
    assert w.failed == []
    assert engine.one("SELECT count(*) FROM public.sms_log") == before + w.inserted
    assert engine.one("SELECT time_type || ' ' || time_zone FROM pgretention.managed_table") == "timestamp Europe/Amsterdam"
    assert engine.one("SELECT cutover FROM pgretention.adoption") == engine.one(
        "SELECT to_char(date_trunc('week', (now() AT TIME ZONE 'Europe/Amsterdam') + interval '1 week') + interval '1 week',"
        " 'YYYY-MM-DD HH24:MI:SS')")
    # a row without time now goes to the default partition and is kept
    engine.execute("INSERT INTO public.sms_log (sender, recipient, body_len, submitted) VALUES ('GW', '+31', 1, NULL)")
    assert engine.one("SELECT tableoid::regclass::text FROM public.sms_log WHERE submitted IS NULL") == "sms_log_default"
    # the serial sequence belongs to the new table: it survives the historical partition
    assert engine.one("SELECT pg_get_serial_sequence('public.sms_log', 'msg_id')") == "public.sms_log_msg_id_seq"
    cutover_at = engine.one("SELECT cutover_at FROM pgretention.adoption")
    res = run(engine, cutover_at + timedelta(days=31))
    assert res["status"] == "ok"
    assert res["totals"]["partitions_dropped"] >= 1
    assert engine.one("SELECT to_regclass('public.sms_log_adopted')") is None
    assert [d["partition"] for _, d, _ in audit(engine, "partition.drop")][0] == "sms_log_adopted"
    run(engine, cutover_at + timedelta(days=32))
    assert engine.one("SELECT state FROM pgretention.adoption") == "done"
    assert engine.one("SELECT count(*) FROM public.sms_log WHERE submitted IS NULL") == 1
    msg_id = engine.one("INSERT INTO public.sms_log (sender, recipient, body_len, submitted)"
                        " VALUES ('GW', '+32', 1, localtimestamp) RETURNING msg_id")
    assert msg_id > before + w.inserted
    # unadopt after the historical partition is gone: a plain table with what is left
    left_rows = engine.one("SELECT count(*) FROM public.sms_log")
    assert engine.one("SELECT pgretention.adopt_undo('public.sms_log')") == left_rows
    assert relkind(engine, "public.sms_log") == "r"
    assert engine.one("SELECT pg_get_serial_sequence('public.sms_log', 'msg_id')") == "public.sms_log_msg_id_seq"


# -- e-mail marketing: primary key and unique message id without the time column, foreign key to
#    campaigns; the CLI's dry run, refusal and --key add-time ------------------------------------------
MAIL_DDL = """
CREATE TABLE public.campaigns (id int PRIMARY KEY, name text);
INSERT INTO public.campaigns VALUES (1, 'spring'), (2, 'summer');
CREATE TABLE public.mail_events (
    id bigserial PRIMARY KEY,
    message_id uuid NOT NULL UNIQUE,
    campaign_id int NOT NULL REFERENCES public.campaigns (id),
    "event" text NOT NULL,
    sent_at timestamptz NOT NULL
);
INSERT INTO public.mail_events (message_id, campaign_id, "event", sent_at)
SELECT gen_random_uuid(), 1 + i % 2, 'sent', now() - (i % 500) * interval '1 day' FROM generate_series(1, 5000) i;
"""


def test_email_events_keys_without_time_column(engine: DB) -> None:
    engine.execute(MAIL_DDL)
    before = snap(engine)
    # dry run: every step with its locks, nothing changed
    res = engine.cli("--format", "json", "adopt", "public.mail_events", "--time-column", "sent_at",
                     "--drop-after", "13 months", "--key", "add-time", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "CREATE UNIQUE INDEX CONCURRENTLY" in res.stdout and "ACCESS EXCLUSIVE" in res.stdout
    # no key choice: refused, naming the key and the choices
    res = engine.cli("adopt", "public.mail_events", "--time-column", "sent_at", "--drop-after", "13 months")
    assert res.returncode == 6 and "Traceback" not in res.stderr
    assert "mail_events_pkey" in res.stderr and "add_time" in res.stderr
    assert diff(before, snap(engine)) == {}
    assert engine.one("SELECT count(*) FROM pgretention.adoption") == 0
    with Writers(engine, "INSERT INTO public.mail_events (message_id, campaign_id, \"event\", sent_at)"
                         " VALUES (gen_random_uuid(), %s, 'open', now())", lambda i, k: [1 + k % 2], n=2) as w:
        res = engine.cli("adopt", "public.mail_events", "--time-column", "sent_at", "--drop-after", "13 months",
                         "--interval", "1 month", "--key", "add-time")
    assert res.returncode == 0, res.stderr
    assert w.failed == []
    assert engine.one("SELECT count(*) FROM public.mail_events") == 5000 + w.inserted
    keys = engine.all("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'public.mail_events'::regclass"
                      " AND contype IN ('p', 'u', 'f') ORDER BY 1")
    assert [k[0] for k in keys] == ["FOREIGN KEY (campaign_id) REFERENCES campaigns(id)",
                                    "UNIQUE (id, sent_at)", "UNIQUE (message_id, sent_at)"]
    # the old keys still hold on the historical partition; the foreign key is enforced on new rows
    assert engine.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.mail_events_adopted'::regclass"
                      " AND contype IN ('p', 'u')") == 4
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        engine.execute("INSERT INTO public.mail_events (message_id, campaign_id, \"event\", sent_at)"
                       " VALUES (gen_random_uuid(), 99, 'open', now())")
    res = engine.cli("--format", "json", "adoptions")
    assert res.returncode == 0 and '"adopted"' in res.stdout and '"public.mail_events"' in res.stdout
    res = engine.cli("unadopt", "public.mail_events", "--yes")
    assert res.returncode == 0, res.stderr
    assert relkind(engine, "public.mail_events") == "r"
    assert engine.one("SELECT count(*) FROM public.mail_events") == 5000 + w.inserted


# -- SMS gateway with epoch seconds in a bigint column named "time" (the way gateways log) -----------
def test_sms_gateway_epoch_seconds(engine: DB) -> None:
    engine.execute("""
        CREATE TABLE public.sent_sms (sql_id bigserial PRIMARY KEY, momt varchar(3), sender varchar(20),
                                      receiver varchar(20), "time" bigint NOT NULL, service varchar(64));
        INSERT INTO public.sent_sms (momt, sender, receiver, "time", service)
        SELECT 'MT', 'GW', '+316' || i, extract(epoch FROM now())::bigint - i * 600, 'otp' FROM generate_series(1, 6000) i;
    """)
    insert = ("INSERT INTO public.sent_sms (momt, sender, receiver, \"time\", service)"
              " VALUES ('MO', %s, %s, extract(epoch FROM now())::bigint, 'otp')")
    with Writers(engine, insert, lambda i, k: [f"+31{i}", f"+32{k}"]) as w:
        engine.execute("CALL pgretention.adopt('public.sent_sms', 'time', '14 days', p_key => 'local')")
    assert w.failed == []
    assert engine.one("SELECT time_type FROM pgretention.managed_table") == "epoch"
    cutover = engine.one("SELECT cutover FROM pgretention.adoption")
    assert engine.one("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'sent_sms_adopted'") == (
        f"FOR VALUES FROM ('-9223372036854775808') TO ('{cutover}')")
    cutover_at = engine.one("SELECT cutover_at FROM pgretention.adoption")
    assert cutover_at == engine.one("SELECT to_timestamp(cutover::bigint) FROM pgretention.adoption")
    # rows after the cut-over land in epoch-bounded daily partitions made by pg_partman
    engine.execute("INSERT INTO public.sent_sms (momt, sender, receiver, \"time\", service)"
                   " VALUES ('MT', 'GW', '+31', extract(epoch FROM %s::timestamptz)::bigint, 'otp')",
                   [cutover_at + timedelta(hours=5)])
    assert engine.one("SELECT tableoid::regclass::text FROM public.sent_sms WHERE receiver = '+31'").startswith("sent_sms_p")
    assert engine.one("SELECT oldest_row_age > interval '40 days' FROM pgretention.status()")
    now = datetime.now(UTC)
    cutoff = int((now - timedelta(days=14)).timestamp())
    expired = engine.one('SELECT count(*) FROM public.sent_sms WHERE "time" < %s', [cutoff])
    total = engine.one("SELECT count(*) FROM public.sent_sms")
    assert expired > 0
    assert run(engine, now)["status"] == "ok"
    assert engine.one("SELECT count(*) FROM public.sent_sms") == total - expired
    assert engine.one('SELECT min("time") FROM public.sent_sms') >= cutoff
    # the whole history expired: the partition goes; later rows stay
    res = run(engine, cutover_at + timedelta(days=14, hours=1))
    assert res["status"] == "ok" and res["totals"]["partitions_dropped"] >= 1
    assert engine.one("SELECT to_regclass('public.sent_sms_adopted')") is None
    assert engine.one("SELECT count(*) FROM public.sent_sms WHERE receiver = '+31'") == 1
    assert engine.one("SELECT pgretention.adopt_undo('public.sent_sms')") == 1
    assert relkind(engine, "public.sent_sms") == "r"


# -- newsletter log with a date column, monthly partitions -----------------------------------------
def test_newsletter_log_with_date_column(engine: DB) -> None:
    engine.execute("""
        CREATE TABLE public.newsletter_log (subscriber_id int, sent_on date NOT NULL, opened boolean);
        INSERT INTO public.newsletter_log SELECT i, current_date - (i % 400), i % 3 = 0 FROM generate_series(1, 4000) i;
    """)
    engine.execute("CALL pgretention.adopt('public.newsletter_log', 'sent_on', '6 months', p_interval => '1 month',"
                   " p_time_zone => 'Europe/Berlin')")
    cutover = engine.one("SELECT cutover FROM pgretention.adoption")
    assert engine.one("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'newsletter_log_adopted'") == (
        f"FOR VALUES FROM ('-infinity') TO ('{cutover}')")
    assert cutover.endswith("-01")
    now = datetime.now(UTC)
    cutoff = engine.one("SELECT ((%s::timestamptz - interval '6 months') AT TIME ZONE 'Europe/Berlin')::date", [now])
    kept = engine.one("SELECT count(*) FROM public.newsletter_log WHERE sent_on >= %s", [cutoff])
    assert run(engine, now)["status"] == "ok"
    assert engine.one("SELECT count(*) FROM public.newsletter_log") == kept
    assert engine.one("SELECT min(sent_on) FROM public.newsletter_log") == cutoff


# -- VoIP legs: primary key with the time column, published for a data warehouse ---------------------
def test_published_voip_legs_with_time_in_key(engine: DB) -> None:
    engine.execute("""
        CREATE TABLE public.voip_legs (leg_id bigint, setup_time timestamptz, sip_call_id text,
                                       PRIMARY KEY (leg_id, setup_time));
        CREATE PUBLICATION dwh FOR TABLE public.voip_legs;
        INSERT INTO public.voip_legs SELECT i, now() - i * interval '10 minutes', md5(i::text)
        FROM generate_series(1, 3000) i;
    """)
    engine.execute("CREATE ROLE dba_anna LOGIN IN ROLE pgretention_admin; CREATE ROLE ops_olaf LOGIN IN ROLE pgretention_operator;"
                   "CREATE ROLE voip_app; ALTER TABLE public.voip_legs OWNER TO voip_app")
    adopt = "CALL pgretention.adopt('public.voip_legs', 'setup_time', '6 months', p_interval => '1 hour')"
    try:
        # least privilege: the operator may not adopt; an admin may once it acts for the table's owner
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with psycopg.connect(engine.dsn_as("ops_olaf"), autocommit=True) as ops:
                ops.execute(adopt)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not a member of its owner voip_app"):
            with psycopg.connect(engine.dsn_as("dba_anna"), autocommit=True) as admin:
                admin.execute(adopt)
        assert relkind(engine, "public.voip_legs") == "r"
        engine.execute("GRANT voip_app TO dba_anna")
        with psycopg.connect(engine.dsn_as("dba_anna"), autocommit=True) as admin:
            admin.execute(adopt)
        assert engine.one("SELECT key_choice FROM pgretention.adoption") == "includes_time"
        assert engine.one("SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                          " WHERE conrelid = 'public.voip_legs'::regclass AND contype = 'p'") == "PRIMARY KEY (leg_id, setup_time)"
        assert engine.all("SELECT prrelid::regclass::text FROM pg_publication_rel") == [("voip_legs",)]
        assert engine.one("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'dwh'") >= 2
        engine.execute("UPDATE public.voip_legs SET sip_call_id = 'x' WHERE leg_id = 1")
        engine.execute("INSERT INTO public.voip_legs VALUES (0, now(), 'new')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            engine.execute("INSERT INTO public.voip_legs SELECT leg_id, setup_time, 'dup' FROM public.voip_legs LIMIT 1")
        assert engine.one("SELECT count(*) FROM public.voip_legs") == 3001
        engine.execute("SELECT pgretention.adopt_undo('public.voip_legs')")
        assert engine.all("SELECT prrelid::regclass::text FROM pg_publication_rel") == [("voip_legs",)]
        assert engine.one("SELECT count(*) FROM public.voip_legs") == 3001
    finally:
        engine.execute("DROP PUBLICATION IF EXISTS dwh; DROP OWNED BY voip_app; DROP ROLE dba_anna; DROP ROLE ops_olaf;"
                       " DROP ROLE voip_app")


# -- a long report holds the table: adoption waits in short attempts, inserts are not held up --------
def test_long_report_delays_adoption_not_inserts(engine: DB) -> None:
    engine.execute("CREATE TABLE public.msg_log (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), body_len int);"
                   " INSERT INTO public.msg_log (at, body_len) SELECT now() - i * interval '1 minute', i FROM generate_series(1, 2000) i")
    report = engine.connect(autocommit=False)
    report.execute("SELECT count(*) FROM public.msg_log")  # holds ACCESS SHARE until it ends
    done: list[float] = []

    def adopt() -> None:
        t0 = time.monotonic()
        engine.execute("CALL pgretention.adopt('public.msg_log', 'at', '30 days', p_key => 'local')")
        done.append(time.monotonic() - t0)

    with Writers(engine, "INSERT INTO public.msg_log (body_len) VALUES (%s)", lambda i, k: [k]) as w:
        th = threading.Thread(target=adopt)
        th.start()
        time.sleep(2.0)
        assert not done
        assert relkind(engine, "public.msg_log") == "r"
        report.rollback()
        report.close()
        th.join(timeout=60)
    assert done and done[0] >= 2.0
    assert w.failed == []
    assert w.longest < 1.0
    assert relkind(engine, "public.msg_log") == "p"
    assert engine.one("SELECT count(*) FROM public.msg_log") == 2000 + w.inserted


# -- bad input and shapes that are refused: clear error, nothing changed ------------------------------
@pytest.mark.parametrize("ddl, call, message", [
    ("", "CALL pgretention.adopt('public.nope', 'ts', '1 year')", "table public.nope does not exist"),
    ("CREATE TABLE t (id int, ts text)", "CALL pgretention.adopt('t', 'ts', '1 year')",
     "column ts of table public.t is not a time column"),
    ("CREATE TABLE t (id int, ts timestamptz)", "CALL pgretention.adopt('t', 'nope', '1 year')",
     "column nope does not exist in table public.t"),
    ("CREATE TABLE t (id int, ts numeric)", "CALL pgretention.adopt('t', 'ts', '1 year')",
     "column ts of table public.t is numeric : epoch time is supported in bigint and integer columns"),
    ("CREATE TABLE t (id int, ts bigint); INSERT INTO t VALUES (1, extract(epoch FROM now())::bigint * 1000)",
     "CALL pgretention.adopt('t', 'ts', '1 year')", "rows dated at or after the cut-over"),
    ("CREATE TABLE t (id int, region text, ts timestamptz) PARTITION BY LIST (region)",
     "CALL pgretention.adopt('t', 'ts', '1 year')", "already partitioned by LIST (region)"),
    ("CREATE TABLE t (id int PRIMARY KEY, ts timestamptz); CREATE TABLE c (t_id int REFERENCES t)",
     "CALL pgretention.adopt('t', 'ts', '1 year', p_key => 'local')", "foreign keys reference table public.t"),
    ("CREATE TABLE t (id int, ts timestamptz); CREATE MATERIALIZED VIEW mv AS SELECT * FROM t",
     "CALL pgretention.adopt('t', 'ts', '1 year')", "materialized views depend on table public.t: public.mv"),
    ("CREATE TABLE t (id int, region text, ts timestamptz)",
     "CALL pgretention.adopt('t', 'ts', '1 year', p_class_column => 'region')", "a class column is not supported yet"),
    ("CREATE TABLE t (id int, ts timestamptz); CREATE PUBLICATION t_pub FOR TABLE t",
     "CALL pgretention.adopt('t', 'ts', '1 year')", "is published with updates and deletes (t_pub)"),
    ("CREATE TABLE t (id int, ts timestamptz)", "CALL pgretention.adopt('t', 'ts', '1 year', p_interval => 'soon')",
     "invalid partition interval"),
    ("CREATE TABLE t (id int, ts timestamptz); INSERT INTO t VALUES (1, now()), (2, NULL)",
     "CALL pgretention.adopt('t', 'ts', '1 year')", "rows without a value in its time column ts"),
    ("CREATE TABLE t (id int, ts timestamptz); INSERT INTO t VALUES (1, now() + interval '1 year')",
     "CALL pgretention.adopt('t', 'ts', '1 year')", "rows dated at or after the cut-over"),
])
def test_bad_input_is_refused_and_changes_nothing(engine: DB, ddl: str, call: str, message: str) -> None:
    if ddl:
        engine.execute(ddl)
    before = snap(engine)
    rows = engine.one("SELECT count(*) FROM t") if engine.one("SELECT to_regclass('public.t')") else None
    with pytest.raises(psycopg.Error) as exc:
        engine.execute(call)
    assert message in str(exc.value)
    assert diff(before, snap(engine)) == {}
    assert engine.one("SELECT count(*) FROM pgretention.adoption WHERE state NOT IN ('cancelled')") == 0
    assert engine.one("SELECT count(*) FROM pgretention.managed_table") == 0
    if rows is not None:
        assert engine.one("SELECT count(*) FROM t") == rows
        assert engine.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 't'::regclass AND contype = 'c'") == 0
    # a refusal after the validation started is recorded as a failed adoption, with no personal data
    for _, details, outcome in audit(engine, "table.adopt"):
        assert outcome == "failed" and "cancelled" in details


def test_cli_refusal_is_one_line(engine: DB) -> None:
    engine.execute("CREATE TABLE public.t (id int, ts text)")
    res = engine.cli("adopt", "public.t", "--time-column", "ts", "--drop-after", "1 year")
    assert res.returncode == 6
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pgretention: error: ") and "is not a time column" in lines[0]
    assert relkind(engine, "public.t") == "r"


def test_refused_adoption_of_future_dated_rows_exits_with_invalid_input(installed: DB) -> None:
    installed.execute("CREATE TABLE public.future (id int, t timestamptz NOT NULL);"
                      " INSERT INTO public.future VALUES (1, now() + interval '1 year')")
    with installed.connect() as conn:
        before = snapshot(conn)
    res = installed.cli("adopt", "--time-column=t", "--drop-after=1 year", "--", "public.future")
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert "rows dated at or after the cut-over" in res.stderr and "nothing changed" in res.stderr
    with installed.connect() as conn:
        assert diff(before, snapshot(conn)) == {}
    assert installed.one("SELECT state FROM pgretention.adoption") == "cancelled"
    assert res.returncode == 6, (res.returncode, res.stderr)  # docs/install.md: 6 = invalid input, nothing changed
