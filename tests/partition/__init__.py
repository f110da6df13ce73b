"""The partition purge engine: classes and layouts, purge, crash trials, concurrency, its commands."""
