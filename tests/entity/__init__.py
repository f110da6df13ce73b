"""The entity engine: row-level rules, hierarchies, notices, crash trials, its commands."""
