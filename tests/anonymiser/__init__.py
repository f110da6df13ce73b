"""The anonymiser: column rules, rewrite-and-swap, keys, roll-ups, crash trials, concurrency."""
