"""Entity engine through the command line and the roles: rules, run, notices export, errors."""

from __future__ import annotations

import csv
import io
import json

import psycopg
import pytest

from pgretention import installer
from tests.fix_db import DB, simulate


@pytest.fixture
def ref(installed: DB) -> DB:
    res = installed.cli("install", "--no-cron", "--reference-schema", check=True)
    assert "reference schema crm" in res.stdout, res.stdout
    simulate(installed)
    return installed


def test_reference_schema_install_is_replayable(ref: DB) -> None:
    rules = ref.all("SELECT rule_name, period::text, action FROM pgretention.entity_rule ORDER BY rule_name")
    assert rules == [("accounts", "2 years", "delete"), ("consent_proofs", "5 years", "delete"),
                     ("customers", "10 years", "anonymise"), ("invoices", "10 years", "delete"),
                     ("job_applicants", "1 day", "delete"), ("marketing_leads", "1 year", "delete"),
                     ("website_data", "5 years", "delete")]
    assert ref.one("SELECT count(*) FROM pgretention.managed_table WHERE table_schema = 'crm'") == 2
    audit = ref.one("SELECT count(*) FROM pgretention.audit_log")
    installer.install(ref.dsn, with_cron=False, reference_schema=True)
    assert ref.one("SELECT count(*) FROM pgretention.entity_rule") == 7
    assert ref.one("SELECT count(*) FROM pgretention.audit_log") == audit


def test_cli_rule_run_notices_status(ref: DB) -> None:
    ref.execute("CREATE TABLE public.lead (id int PRIMARY KEY, reseller int, email text, seen_at date)")
    ref.execute("INSERT INTO public.lead VALUES (1, 7, 'a@x', '2024-01-01'), (2, 7, 'b@x', '2025-06-01'),"
                " (3, 8, 'c@x', '2024-02-01')")
    res = ref.cli("entity", "rule", "create", "leads", "--table", "public.lead", "--activity", '[{"column": "seen_at"}]',
                  "--period", "12 months", "--notice", "14 days")
    assert res.returncode == 0, res.stderr
    res = ref.cli("--format", "json", "entity", "rule", "list", check=True)
    listed = json.loads(res.stdout)
    assert {r["rule"]: r["table"] for r in listed}["leads"] == "public.lead"
    assert [r["rule"] for r in listed] == ["accounts", "consent_proofs", "customers", "invoices",
                                                           "job_applicants", "leads", "marketing_leads",
                                                           "website_data"]

    res = ref.cli("--format", "json", "entity", "run", "--rule", "leads", "--now", "2025-03-01")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["run"]["status"] == "ok"
    assert out["run"]["summary"]["rules"]["leads"]["listed"] == 2
    assert ref.one("SELECT count(*) FROM public.lead") == 3

    res = ref.cli("entity", "notices", "--rule", "leads", "--csv", check=True)
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["parent_key"], r["key"]) for r in rows] == [("", "1"), ("", "3")]
    assert rows[0]["deletion_from"].startswith("2025-03-15")
    res = ref.cli("--format", "json", "entity", "notices", check=True)
    assert len(json.loads(res.stdout)) == 2

    res = ref.cli("--format", "json", "entity", "plan", "--rule", "leads", "--now", "2025-03-16", check=True)
    assert json.loads(res.stdout)[0]["rows_due"] == 2
    res = ref.cli("entity", "run", "--rule", "leads", "--now", "2025-03-16", check=True)
    assert "rule leads: 2 rows due" in res.stdout
    assert ref.all("SELECT id FROM public.lead") == [(2,)]
    res = ref.cli("--format", "json", "entity", "status", "--now", "2025-03-16", check=True)
    st = {r["rule_name"]: r for r in json.loads(res.stdout)}
    assert st["leads"]["rows_deleted"] == 2 and st["leads"]["rows_total"] == 1
    res = ref.cli("entity", "status", check=True)
    assert "leads" in res.stdout

    res = ref.cli("entity", "rule", "drop", "leads", check=True)
    assert ref.one("SELECT count(*) FROM pgretention.audit_log WHERE action = 'entity.rule.drop'") == 1


def test_cli_errors_are_one_line(ref: DB) -> None:
    cases = [
        (["entity", "rule", "create", "x", "--table", "crm.account", "--activity", '[{"column": "nope"}]',
          "--period", "1 year"], 6, "column nope of table crm.account does not exist"),
        (["entity", "rule", "create", "x", "--table", "crm.account", "--activity", "[{", "--period", "1 year"], 6,
         "invalid JSON for --activity"),
        (["entity", "rule", "create", "x", "--table", "crm.account", "--activity", '[{"column": "created_at"}]',
          "--period", "0 days"], 6, "must be positive"),
        (["entity", "run", "--rule", "nope"], 6, "entity rule 'nope' does not exist"),
        (["entity", "notices", "--rule", "nope"], 6, "entity rule 'nope' does not exist"),
        (["entity", "erase", "accounts", "12345", "--yes"], 1, "no row with that key in crm.account"),
    ]
    for args, code, text in cases:
        res = ref.cli(*args)
        assert res.returncode == code, (args, res.stderr)
        assert text in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert ref.one("SELECT count(*) FROM pgretention.entity_rule") == 7


def test_roles(ref: DB) -> None:
    ref.execute(
        "DO $$ BEGIN"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ent_admin') THEN CREATE ROLE ent_admin LOGIN; END IF;"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ent_op') THEN CREATE ROLE ent_op LOGIN; END IF;"
        " IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ent_aud') THEN CREATE ROLE ent_aud LOGIN; END IF;"
        " END$$;"
        "GRANT pgretention_admin TO ent_admin; GRANT pgretention_operator TO ent_op; GRANT pgretention_auditor TO ent_aud"
    )
    ref.execute("INSERT INTO crm.consent_proof (subject_hash, purpose, given_at) VALUES ('h', 'p', '2020-01-01')")
    # the admin acts for the owner of the application's tables only once granted its role
    ref.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'crm_app') THEN CREATE ROLE crm_app; END IF;"
                " END$$; ALTER TABLE crm.marketing_lead OWNER TO crm_app; REVOKE crm_app FROM ent_admin")
    rule = ("SELECT pgretention.entity_rule_create('leads2', 'crm.marketing_lead', 'id',"
            " '[{\"column\": \"collected_at\"}]', '6 months')")
    with psycopg.connect(ref.dsn_as("ent_admin"), autocommit=True) as admin, pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="not a member of its owner crm_app"):
        admin.execute(rule)
    ref.execute("GRANT crm_app TO ent_admin")
    with psycopg.connect(ref.dsn_as("ent_admin"), autocommit=True) as admin:
        admin.execute(rule)
    with psycopg.connect(ref.dsn_as("ent_op"), autocommit=True) as op:
        op.execute("CALL pgretention.entity_run(NULL, 'consent_proofs')")  # the clock: the operator does not simulate
        assert op.execute("SELECT count(*) FROM pgretention.entity_notices").fetchone()[0] == 0  # type: ignore[index]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            op.execute("SELECT pgretention.entity_rule_drop('leads2')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            op.execute("SELECT * FROM pgretention.entity_hash_key")
    assert ref.one("SELECT count(*) FROM crm.consent_proof") == 0
    with psycopg.connect(ref.dsn_as("ent_aud"), autocommit=True) as aud:
        assert aud.execute("SELECT count(*) FROM pgretention.entity_status()").fetchone()[0] == 8  # type: ignore[index]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            aud.execute("CALL pgretention.entity_run()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            aud.execute("SELECT * FROM pgretention.entity_notices")
    with psycopg.connect(ref.dsn_as("ent_admin"), autocommit=True) as admin, pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        admin.execute("SELECT * FROM pgretention.entity_hash_key")
