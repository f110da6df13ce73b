"""Results: targets (:class:`Check`), a benchmark's :class:`Result`, formatting, plots, progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

_T0 = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr, with the time since the harness started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Check:
    """A target: ``value`` against ``limit`` (at most, or at least when ``at_least``)."""

    name: str
    value: float
    limit: float
    unit: str = ""
    at_least: bool = False

    @property
    def ok(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        op = ">=" if self.at_least else "<="
        return (
            f"[{'PASS' if self.ok else 'MISS'}] {self.name}: {_num(self.value)}{self.unit}"
            f" (target {op} {_num(self.limit)}{self.unit})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "at_least": self.at_least,
            "ok": self.ok,
        }


@dataclass
class Result:
    name: str
    title: str
    scale: float
    params: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    ratios: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def render(self) -> str:
        lines = [f"== {self.name}: {self.title} (scale {self.scale:g})"]
        lines += [f"   {k}: {v}" for k, v in self.params.items()]
        if self.rows:
            lines += ["", *render_table(self.headers, self.rows)]
        if self.ratios:
            lines += ["", *[f"   {r}" for r in self.ratios]]
        if self.checks:
            lines += ["", *[f"   {c.line()}" for c in self.checks]]
        if self.notes:
            lines += ["", *[f"   note: {n}" for n in self.notes]]
        if self.plots:
            lines += [f"   plot: {p}" for p in self.plots]
        lines.append(f"   ({self.seconds:.0f}s including setup)")
        return "\n".join(lines)

    def as_dict(self, environment: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "scale": self.scale,
            "params": self.params,
            "figures": self.figures,
            "checks": [c.as_dict() for c in self.checks],
            "ratios": self.ratios,
            "notes": self.notes,
            "plots": self.plots,
            "seconds": round(self.seconds, 1),
            "environment": environment,
            "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(r: Sequence[str]) -> str:
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "   " + "  ".join(cells)

    return [fmt(headers), "   " + "  ".join("-" * w for w in widths), *[fmt(r) for r in rows]]


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_ms(ms: float) -> str:
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: Path, name: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path.name
