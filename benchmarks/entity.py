"""entity: purging inactive accounts (row-level retention) with pgretention against one naive DELETE.

Data (reference schema ``crm``, 1M accounts at scale 1): a 3-level hierarchy of super-accounts (1%),
resellers (9%) and sub-accounts (90%), 20 contacts per account, 10% of the accounts inactive for
30 months (the rule: 24 months, 30 days notice), the rest active within the last 300 days.

* pgretention: the reference rule ``accounts``; a run 31 days earlier lists the accounts (notice),
  then ``CALL pgretention.entity_run()`` deletes them in short batches (contacts first).
* naive: the same data (a copy of the database), one ``DELETE FROM crm.account WHERE <inactive 24
  months> AND <no sub-account>`` whose contacts go by ``ON DELETE CASCADE``.

During each, a client inserts every 10 ms, alternately, a sub-account (under a random super-account)
and a contact (for a random account, some of them being deleted), and records the latencies. Figures: time, rows removed per second, longest lock
hold (the longest batch transaction; for the naive DELETE, the statement), insert latency.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness.results import Check, Result, fmt_ms, log, pyplot, save_figure
from benchmarks.harness.server import Context, checkpoint, connect, one
from pgretention import installer

NAME = "entity"
ACCOUNTS = 1_000_000  # at scale 1
CONTACTS_PER_ACCOUNT = 20
INACTIVE_PERCENT = 10
MAX_LOCK_MS = 200.0
INSERT_EVERY_S = 0.01

NAIVE_DELETE = """
DELETE FROM crm.account a
WHERE greatest(a.created_at, a.last_login_at,
               (SELECT max(c.expires_at) FROM crm.credit c WHERE c.account_id = a.id),
               (SELECT max(s.ends_at) FROM crm.subscription s WHERE s.account_id = a.id),
               (SELECT max(m.sent_at) FROM crm.message_stat m WHERE m.account_id = a.id),
               (SELECT max(v.activated_at) FROM crm.service_activation v WHERE v.account_id = a.id))
      <= %(cutoff)s
  AND NOT EXISTS (SELECT 1 FROM crm.account ch WHERE ch.parent_id = a.id)
"""


def run(ctx: Context) -> Result:
    n = max(10_000, round(ACCOUNTS * ctx.scale))
    with ctx.database(NAME) as dsn:
        return _run(ctx, dsn, n)


def _load(ctx: Context, dsn: str, n: int, now: datetime) -> float:
    t0 = time.monotonic()
    supers, resellers = n // 100, n // 10
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO crm.account (id, parent_id, account_type, name, email, created_at, last_login_at)"
            " SELECT g, CASE WHEN g <= %(s)s THEN NULL WHEN g <= %(r)s THEN 1 + g %% %(s)s"
            "                ELSE %(s)s + 1 + g %% (%(r)s - %(s)s) END,"
            "        CASE WHEN g <= %(s)s THEN 'super' WHEN g <= %(r)s THEN 'reseller' ELSE 'sub' END,"
            "        'Account ' || g, 'a' || g || '@example.org', %(now)s - interval '40 months',"
            "        CASE WHEN (hashint8(g) & 1023) %% 100 < %(inactive)s THEN %(now)s - interval '30 months'"
            "             ELSE %(now)s - make_interval(days => (g %% 300)::int) END"
            " FROM generate_series(1, %(n)s) g",
            {"s": supers, "r": resellers, "n": n, "now": now, "inactive": INACTIVE_PERCENT})
        conn.execute("SELECT setval(pg_get_serial_sequence('crm.account', 'id'), %s)", [n])
    chunk = 50_000
    ranges = [(lo, min(lo + chunk - 1, n)) for lo in range(1, n + 1, chunk)]
    errors: list[BaseException] = []

    def worker(part: list[tuple[int, int]]) -> None:
        try:
            with connect(dsn) as conn:
                for lo, hi in part:
                    conn.execute(
                        "INSERT INTO crm.contact (account_id, name, email, phone)"
                        " SELECT g, 'Contact ' || k, 'c' || k || '.' || g || '@example.org',"
                        "        '+316' || (10000000 + (hashint8(g * 32 + k) & 2147483647) %% 90000000)"
                        " FROM generate_series(%s::bigint, %s::bigint) g, generate_series(1, %s) k",
                        [lo, hi, CONTACTS_PER_ACCOUNT])
        except BaseException as exc:  # noqa: B036 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ranges[i::ctx.jobs],)) for i in range(ctx.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    with connect(dsn) as conn:
        for table in ("account", "contact", "contact_list", "credit", "subscription", "message_stat",
                      "service_activation", "email_content"):
            conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(sql.Identifier("crm", table)))
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier("crm", table)))
    return time.monotonic() - t0


class Inserter:
    """Every 10 ms, alternately: a sub-account under a random super-account (never deleted), and a
    contact for a random account (10% of them being deleted). Records the latency of each."""

    def __init__(self, dsn: str, n: int) -> None:
        self.dsn = dsn
        self.n = n
        self.samples: list[tuple[float, float, str, bool]] = []  # (seconds since start, ms, kind, ok)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop)
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        rnd = random.Random(42)
        supers = max(1, self.n // 100)
        k = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                k += 1
                kind = "account" if k % 2 else "contact"
                t = time.monotonic()
                ok = True
                try:
                    if kind == "account":
                        conn.execute("INSERT INTO crm.account (parent_id, account_type, name) VALUES (%s, 'sub', 'new')",
                                     [rnd.randint(1, supers)])
                    else:
                        conn.execute("INSERT INTO crm.contact (account_id, email) VALUES (%s, 'new@example.org')",
                                     [rnd.randint(1, self.n)])
                except psycopg.errors.ForeignKeyViolation:
                    ok = False  # the account was deleted meanwhile
                ms = (time.monotonic() - t) * 1e3
                self.samples.append((t - self.t0, ms, kind, ok))
                time.sleep(INSERT_EVERY_S)

    def summary(self, kind: str) -> dict[str, Any]:
        lat = sorted(s[1] for s in self.samples if s[2] == kind)
        if not lat:
            return {"inserts": 0}
        return {"inserts": len(lat), "p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "max_ms": lat[-1], "refused_account_gone": sum(1 for s in self.samples if s[2] == kind and not s[3])}

    def inserted(self, kind: str) -> int:
        return sum(1 for s in self.samples if s[2] == kind and s[3])


def _counts(dsn: str) -> tuple[int, int]:
    with connect(dsn) as conn:
        return int(one(conn, "SELECT count(*) FROM crm.account")), int(one(conn, "SELECT count(*) FROM crm.contact"))


def _pgretention(dsn: str, n: int, now: datetime) -> dict[str, Any]:
    batches: list[tuple[float, float]] = []  # (seconds since start, ms)
    t_start = time.monotonic()

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        msg = diag.message_primary or ""
        if " rows in " in msg and " ms (pass" in msg:
            batches.append((time.monotonic() - t_start, float(msg.split(" rows in ", 1)[1].split(" ms", 1)[0])))

    accounts0, contacts0 = _counts(dsn)
    with connect(dsn) as conn:
        checkpoint(conn)
    ins = Inserter(dsn, n)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(on_notice)
        ins.start()
        time.sleep(1.0)
        t_start = time.monotonic()
        conn.execute("CALL pgretention.entity_run(p_now => %s, p_rule => 'accounts', p_runner => 'bench')", [now])
        ms = (time.monotonic() - t_start) * 1e3
        time.sleep(1.0)
        ins.stop()
        status, summary = conn.execute("SELECT status, summary FROM pgretention.job_run ORDER BY id DESC LIMIT 1"
                                       ).fetchone() or (None, {})
        audit_max = one(conn, "SELECT max((details ->> 'ms')::float8) FROM pgretention.audit_log"
                              " WHERE action = 'entity.delete'")
    accounts1, contacts1 = _counts(dsn)
    removed_accounts = accounts0 + ins.inserted("account") - accounts1
    removed_contacts = contacts0 + ins.inserted("contact") - contacts1
    batch_ms = [b[1] for b in batches]
    return {"ms": ms, "status": status, "accounts_removed": removed_accounts, "contacts_removed": removed_contacts,
            "rows_removed": removed_accounts + removed_contacts, "batches": len(batches),
            "longest_batch_ms": max(batch_ms, default=0.0), "longest_batch_function_ms": audit_max,
            "median_batch_ms": sorted(batch_ms)[len(batch_ms) // 2] if batch_ms else 0.0,
            "summary": summary.get("rules", {}).get("accounts"), "insert": ins.summary("account"),
            "insert_contact": ins.summary("contact"),
            "_batches": batches, "_samples": ins.samples}


def _naive(dsn: str, n: int, now: datetime) -> dict[str, Any]:
    accounts0, contacts0 = _counts(dsn)
    with connect(dsn) as conn:
        checkpoint(conn)
    ins = Inserter(dsn, n)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ins.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        cur = conn.execute(NAIVE_DELETE, {"cutoff": now - timedelta(days=730)})
        deleted = cur.rowcount
        ms = (time.monotonic() - t0) * 1e3
        time.sleep(1.0)
        ins.stop()
    accounts1, contacts1 = _counts(dsn)
    removed_contacts = contacts0 + ins.inserted("contact") - contacts1
    return {"ms": ms, "accounts_removed": deleted, "contacts_removed": removed_contacts,
            "rows_removed": deleted + removed_contacts, "lock_hold_ms": ms, "insert": ins.summary("account"),
            "insert_contact": ins.summary("contact"),
            "accounts_before": accounts0, "accounts_after": accounts1, "_samples": ins.samples}


def _run(ctx: Context, dsn: str, n: int) -> Result:
    res = Result(NAME, "inactive accounts: pgretention run_entities() in batches vs one DELETE ... CASCADE", ctx.scale)
    res.params = {
        "data": f"{n:,} accounts (super 1%, reseller 9%, sub 90%), {CONTACTS_PER_ACCOUNT} contacts each "
                f"({n * CONTACTS_PER_ACCOUNT:,}), {INACTIVE_PERCENT}% inactive for 30 months",
        "rule": "reference rule accounts: 24 months after the latest of 6 activity sources, 30 days notice, "
                "contacts, lists, contents and statistics cleaned first, never a parent with live sub-accounts",
        "concurrent load": "one client inserting every 10 ms a sub-account or a contact of a random account",
    }
    installer.install(dsn, with_cron=False, reference_schema=True)
    with connect(dsn) as conn:
        now = one(conn, "SELECT date_trunc('second', now())")
    log(f"entity: loading {n:,} accounts and {n * CONTACTS_PER_ACCOUNT:,} contacts")
    load_s = _load(ctx, dsn, n, now)
    log(f"entity: loaded in {load_s:.0f}s; listing the inactive accounts 31 days before (notice)")
    with connect(dsn) as conn:
        t0 = time.monotonic()
        conn.execute("CALL pgretention.entity_run(p_now => %s, p_rule => 'accounts', p_runner => 'bench')",
                     [now - timedelta(days=31)])
        listing_ms = (time.monotonic() - t0) * 1e3
        listed = int(one(conn, "SELECT count(*) FROM pgretention.entity_notice"))
    log(f"entity: {listed:,} accounts listed in {fmt_ms(listing_ms)}; copying the database for the naive DELETE")
    with ctx.database(f"{NAME}_naive", template=NAME) as naive_dsn:
        log("entity: pgretention run_entities()")
        pgr = _pgretention(dsn, n, now)
        log(f"entity: pgretention removed {pgr['rows_removed']:,} rows in {fmt_ms(pgr['ms'])}, {pgr['batches']} batches")
        log("entity: naive DELETE ... CASCADE")
        nv = _naive(naive_dsn, n, now)
        log(f"entity: naive DELETE removed {nv['rows_removed']:,} rows in {fmt_ms(nv['ms'])}")

    pgr_rate = pgr["rows_removed"] / max(pgr["ms"] / 1e3, 1e-9)
    nv_rate = nv["rows_removed"] / max(nv["ms"] / 1e3, 1e-9)
    res.headers = ["method", "time", "accounts", "contacts", "rows/s", "longest lock hold", "account insert p50",
                   "p99", "max", "contact insert p99", "max"]
    for label, f, hold in (("pgretention run_entities()", pgr, pgr["longest_batch_ms"]),
                           ("naive DELETE ... CASCADE", nv, nv["lock_hold_ms"])):
        i, c = f["insert"], f["insert_contact"]
        res.rows.append([label, fmt_ms(f["ms"]), f"{f['accounts_removed']:,}", f"{f['contacts_removed']:,}",
                         f"{f['rows_removed'] / max(f['ms'] / 1e3, 1e-9):,.0f}", fmt_ms(hold),
                         fmt_ms(i.get("p50_ms", 0)), fmt_ms(i.get("p99_ms", 0)), fmt_ms(i.get("max_ms", 0)),
                         fmt_ms(c.get("p99_ms", 0)), fmt_ms(c.get("max_ms", 0))])
    res.ratios = [
        f"purge rate: pgretention {pgr_rate:,.0f} rows/s, naive DELETE {nv_rate:,.0f} rows/s "
        f"(pgretention at {100 * pgr_rate / max(nv_rate, 1e-9):.0f}% of the naive rate)",
        f"longest lock hold: pgretention {fmt_ms(pgr['longest_batch_ms'])} (median batch "
        f"{fmt_ms(pgr['median_batch_ms'])}), naive {fmt_ms(nv['lock_hold_ms'])}",
        f"notice listing of {listed:,} accounts (a read-only scan of all accounts): {fmt_ms(listing_ms)}",
    ]
    res.checks = [
        Check("pgretention longest lock hold", pgr["longest_batch_ms"], MAX_LOCK_MS, " ms"),
        Check("pgretention account insert latency max", pgr["insert"].get("max_ms", 0.0), MAX_LOCK_MS, " ms"),
        Check("pgretention contact insert latency max", pgr["insert_contact"].get("max_ms", 0.0), MAX_LOCK_MS, " ms"),
        Check("same accounts removed by both", float(pgr["accounts_removed"] == nv["accounts_removed"]), 1.0,
              at_least=True),
    ]
    res.notes = [
        "rows removed = accounts + contacts; the naive DELETE's contacts go by ON DELETE CASCADE",
        "lock hold of a batch: its transaction as seen by the runner (work + commit); the naive DELETE holds its "
        "row locks for the whole statement",
    ]
    res.figures = {"accounts": n, "contacts": n * CONTACTS_PER_ACCOUNT, "load_s": load_s, "listing_ms": listing_ms,
                   "listed": listed, "pgretention": {k: v for k, v in pgr.items() if not k.startswith("_")},
                   "naive": {k: v for k, v in nv.items() if not k.startswith("_")},
                   "rates_rows_per_s": {"pgretention": pgr_rate, "naive": nv_rate}}
    res.plots = [_plot(ctx, pgr, nv)]
    return res


def _plot(ctx: Context, pgr: dict[str, Any], nv: dict[str, Any]) -> str:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7))
    for label, f, color in (("pgretention", pgr, "tab:green"), ("naive DELETE", nv, "tab:red")):
        for kind, marker in (("account", "o"), ("contact", "x")):
            xs = [s[0] for s in f["_samples"] if s[2] == kind]
            ys = [s[1] for s in f["_samples"] if s[2] == kind]
            ax1.scatter(xs, ys, s=6, marker=marker, color=color, label=f"{label}: {kind} inserts")
    ax1.axhline(MAX_LOCK_MS, color="grey", linestyle="--", linewidth=0.8, label=f"{MAX_LOCK_MS:.0f} ms")
    ax1.set_yscale("log")
    ax1.set_xlabel("seconds since the insert client started (purge starts at 1 s)")
    ax1.set_ylabel("insert latency (ms)")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.set_title(f"insert latency during the purge (pgretention {fmt_ms(pgr['ms'])}, naive {fmt_ms(nv['ms'])})")
    bx = [b[0] for b in pgr["_batches"]]
    by = [b[1] for b in pgr["_batches"]]
    ax2.plot(bx, by, marker=".", linestyle="none", color="tab:green", label="pgretention batch transaction")
    ax2.axhline(MAX_LOCK_MS, color="grey", linestyle="--", linewidth=0.8)
    ax2.axhline(nv["lock_hold_ms"], color="tab:red", linewidth=1, label="naive DELETE (one statement)")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds since run_entities() started")
    ax2.set_ylabel("lock hold (ms)")
    ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, ctx.out, NAME)
