"""``pgretention bench`` runs the checkout's benchmarks with the options it is given."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.__main__ import BENCHMARKS, OPT_IN, parse_args
from pgretention.cli import bench as bench_cli
from tests.fix_db import ROOT


def test_bench_finds_the_checkout_and_passes_options() -> None:
    assert bench_cli.benchmarks_dir() == ROOT / "benchmarks"
    # every benchmark module of the package is registered; scale and citus run only when named
    names = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__", "__main__", "common"}
    assert names <= set(BENCHMARKS)
    assert OPT_IN == {"scale", "citus"}
    assert parse_args(["--only", "scale", "--scale", "0.5"]).only == ["scale"]
    # an unknown name is refused by the harness before any server is started
    res = subprocess.run([sys.executable, "-m", "pgretention", "bench", "--only", "nope", "--scale", "0.1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "invalid choice: 'nope'" in res.stderr
