"""``python -m benchmarks``: run the benchmarks of pgretention's engines and report figures and targets.

Results go to ``benchmarks/results/<name>.json`` and ``<name>.png`` (or ``--out``). The default
scale keeps a whole run within a few minutes on a 2-core machine; ``--scale 1`` is the full size
(10M expired rows in ``purge``). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import adopt, anonymise, audit, citus, entity, ingest, purge, scale, size, subjects
from benchmarks.harness.meters import CpuMeter
from benchmarks.harness.results import Result, log
from benchmarks.harness.server import Context, start_server, stop_server

BENCHMARKS: dict[str, Callable[[Context], Result]] = {
    purge.NAME: purge.run,
    size.NAME: size.run,
    ingest.NAME: ingest.run,
    adopt.NAME: adopt.run,
    entity.NAME: entity.run,
    audit.NAME: audit.run,
    subjects.NAME: subjects.run,
    anonymise.NAME: anonymise.run,
    scale.NAME: scale.run,
    citus.NAME: citus.run,
}
# Run only when named with --only (too long or too large for the default run).
OPT_IN = {scale.NAME, citus.NAME}  # citus: against PGRETENTION_CITUS_DSN
DEFAULT_SCALE = 0.2
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of every engine of pgretention: partition purge (purge, size, ingest, scale, "
        "citus), adoption, entity retention, audit log and report, subject requests and legal holds, "
        "anonymiser; against the usual alternative where there is one (DELETE + VACUUM, pg_partman's "
        "retention, UPDATE in place) on the same data; on a throwaway local PostgreSQL cluster.",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        help=f"multiplies row counts (and the ingest report's duration); default {DEFAULT_SCALE}, "
        "1.0 = 10M expired rows in purge",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help="run only this benchmark; may be repeated (scale and citus run only when named)",
    )
    parser.add_argument(
        "--dsn",
        help="use this existing server instead of a throwaway cluster (the role must "
        "be able to create databases and extensions; no restarts, so caches "
        "stay warm)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory for JSON results and PNG plots"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="connections loading test data in parallel (default: 2)",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = (
        [n for n in BENCHMARKS if n in args.only] if args.only else [n for n in BENCHMARKS if n not in OPT_IN]
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    failed: list[str] = []
    t0 = time.monotonic()
    server = None
    try:
        server = start_server(args.dsn)
        ctx = Context.on(server, args.scale, out, args.jobs)
        environment = ctx.environment()
        log(f"benchmarks {', '.join(names)} at scale {args.scale:g}; results in {out}")
        for name in names:
            started = time.monotonic()
            load_before = _load()
            meter = CpuMeter(server).start()
            log(f"== {name}")
            try:
                result = BENCHMARKS[name](ctx)
            except Exception as exc:
                meter.stop()
                traceback.print_exc()
                failed.append(f"{name}: {exc}")
                continue
            result.seconds = time.monotonic() - started
            result.figures["load_average"] = {"before": load_before, "after": _load()}
            cpu = meter.stop()
            result.figures["cpu"] = cpu
            others = cpu.get("others_pct") if cpu is not None else None
            if others is not None and others > 10:
                result.notes.append(
                    f"other processes used {others:.0f}% of the machine's CPU time during this "
                    "benchmark: they competed for CPU and disk, the figures are perturbed"
                )
            results.append(result)
            _write_json(out / f"{name}.json", result.as_dict(environment))
            print(result.render(), flush=True)
            print(flush=True)
    except KeyboardInterrupt:
        failed.append("interrupted")
    finally:
        if server is not None:
            stop_server(server)

    if results:
        print(_summary(results, args.scale, time.monotonic() - t0))
    for f in failed:
        print(f"ERROR {f}", file=sys.stderr)
    return 1 if failed else 0


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _summary(results: list[Result], scale: float, seconds: float) -> str:
    lines = [f"== targets (scale {scale:g}, {seconds / 60:.1f} min in all)"]
    for r in results:
        for c in r.checks:
            lines.append(f"   {r.name:<7} {c.line()}")
    missed = sum(1 for r in results for c in r.checks if not c.ok)
    total = sum(len(r.checks) for r in results)
    lines.append(f"   {total - missed} of {total} targets met")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
