"""The README's demo: a throwaway PostgreSQL, pgretention installed, a CDR table with three
retention classes, 30 months of calls, then status, plan, a purge and a simulated quarter.

Run with ``make demo`` (or ``python -m pgretention.demo``). Everything happens in a temporary
cluster that is removed at the end; ``--keep`` leaves it running and prints its DSN.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psycopg

from pgretention.cluster import LocalCluster

CLASSES = [
    ("eu", "6 months", ["NL", "DE", "BE", "FR"]),    # CPaaS: 6 months in the EU (rule 12)
    ("sms", "13 months", ["SMS"]),                    # SMS platform: 13 months (rule 1)
    ("intl", "24 months", []),                        # VoIP traffic elsewhere: 24 months (rule 6), default
]


def cli(dsn: str, *args: str) -> None:
    print(f"\n$ pgretention {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "pgretention", "--dsn", dsn, *args], check=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    ap.add_argument("--rows", type=int, default=300_000, help="calls to generate")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    cluster = LocalCluster(keep=args.keep)
    cluster.start()
    print(f"started a throwaway PostgreSQL {cluster.major} on port {cluster.port}")
    try:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE telco")
        dsn = cluster.conninfo("telco")
        cli(dsn, "install")

        members = [f"--member={m}={c}" for c, _, ms in CLASSES for m in ms]
        cli(dsn, "table", "create", "public.cdr",
            "--columns", "id bigint, region text, started_at timestamptz, caller text, callee text, duration_s int",
            "--time-column", "started_at", "--interval", "1 month", "--class-column", "region",
            "--default-class", "intl", *[f"--class={c}:{d}" for c, d, _ in CLASSES], *members)

        with psycopg.connect(dsn, autocommit=True) as conn:
            # pg_partman premade partitions from now on; give the table 30 months of history
            for cls in ("eu", "sms", "intl"):
                conn.execute(
                    "SELECT pgretention._partman_call('create_partition_time', jsonb_build_object("
                    " 'p_parent_table', %s::text, 'p_analyze', false, 'p_partition_times', to_jsonb(ARRAY("
                    " SELECT generate_series(date_trunc('month', now() - interval '30 months'), now(),"
                    " interval '1 month')))))",
                    [f"public.cdr_{cls}"],
                )
            conn.execute("CREATE INDEX ON cdr (started_at)")
            conn.execute("CREATE INDEX ON cdr (caller)")
            t = time.monotonic()
            conn.execute(
                "INSERT INTO cdr SELECT g, (ARRAY['NL','DE','BE','FR','SMS','US','BR','IN'])[1 + g %% 8],"
                " now() - random() * interval '30 months',"
                " '+31' || (600000000 + g %% 9000000)::text, '+1' || (2025550000 + g %% 10000)::text,"
                " (random() * 600)::int FROM generate_series(1, %s) g",
                [args.rows],
            )
            # a few stragglers with no usable timestamp or far outside any partition
            conn.execute("INSERT INTO cdr (id, region, started_at) VALUES (-1, 'NL', NULL), (-2, 'US', '2001-01-01')")
            print(f"\nloaded {args.rows:,} calls over 30 months in {time.monotonic() - t:.1f}s")
        # SMS records are anonymised after 3 months, kept 13 (rules 1 and 20): pseudonymise the
        # caller per quarter, keep only country and area of the callee
        cli(dsn, "class", "set", "public.cdr", "sms", "--drop-after", "13 months", "--anonymise-after", "3 months")
        cli(dsn, "anonymise", "rule", "public.cdr", "caller", "pseudonym")
        cli(dsn, "anonymise", "rule", "public.cdr", "callee", "e164_prefix", "4")
        # data subjects: callers and callees are phone numbers; one of them is under a disclosure order
        cli(dsn, "subject", "register", "public.cdr", "--column", "caller=phone", "--column", "callee=phone",
            "--create-indexes")
        cli(dsn, "hold", "set", "--reason", "lawful disclosure order", "--reference", "ORDER-2026-17",
            "--kind", "phone", "--value", "+31600000008")
        cli(dsn, "status")
        cli(dsn, "plan")
        cli(dsn, "run")
        cli(dsn, "status")
        with psycopg.connect(dsn, autocommit=True) as conn:
            kept = conn.execute("SELECT count(*) FROM pgretention.hold_store").fetchone()[0]  # type: ignore[index]
            print(f"\nrows of the number under the disclosure order kept from dropped partitions: {kept}")
        cli(dsn, "request", "create", "erasure", "--phone", "+31 6 0000 0016")
        with psycopg.connect(dsn, autocommit=True) as conn:
            print("\nsimulating the next quarter: one run per week with a reference time")
            # reference times ahead of the clock: only the installing role, only in this session
            conn.execute("SELECT pgretention.simulation_enable()")
            conn.execute("INSERT INTO cdr SELECT -100 - g, 'NL', now() + g * interval '1 day', '+31600000000',"
                         " '+12025550000', 60 FROM generate_series(1, 90) g")
            for week in range(1, 14):
                conn.execute("CALL pgretention.run(now() + %s * interval '1 week', p_runner => 'sql')", [week])
            print("dropped partitions:", conn.execute(
                "SELECT count(*) FROM pgretention.partition_op WHERE state = 'done'").fetchone()[0])  # type: ignore[index]
            ok, records = conn.execute("SELECT ok, records FROM pgretention.audit_verify()").fetchone()  # type: ignore[misc]
            print(f"audit log: {records} records, hash chain intact: {ok}")
        cli(dsn, "request", "fulfil", "1")
        cli(dsn, "status", "--now", time.strftime("%Y-%m-%d", time.gmtime(time.time() + 91 * 86400)))
        cli(dsn, "report")
        print(f"\ndemo finished in {time.monotonic() - t0:.0f}s")
        if args.keep:
            print(f"cluster left running: psql \"{dsn}\"")
    finally:
        if not args.keep:
            cluster.stop()


if __name__ == "__main__":
    main()
