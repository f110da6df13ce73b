"""Benchmarks of pgretention's engines: ``python -m benchmarks`` (see docs/benchmarks.md)."""
