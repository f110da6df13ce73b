"""Sizes and ages as people read them: one copy for the command line and the report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def size(n: Any, *, none: str = "-") -> str:
    """Bytes in B, kB, MB, GB or TB (``none`` when unknown)."""
    if n is None:
        return none
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def age(v: Any) -> str:
    """An interval in days and hours: 3d, 2d 5h, 6h05m."""
    if v is None:
        return "-"
    if isinstance(v, timedelta):
        days, secs = v.days, v.seconds
        if days and secs:
            return f"{days}d {secs // 3600}h"
        return f"{days}d" if days else f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    return str(v)
