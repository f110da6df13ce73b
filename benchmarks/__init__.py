"""Benchmarks of the partition retention engine: ``python -m benchmarks`` (see docs/benchmarks.md)."""
