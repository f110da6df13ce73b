"""Data-subject requests and legal holds: export, erasure, holds, crash trials, concurrency."""
