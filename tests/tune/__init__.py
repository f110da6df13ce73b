"""The partition interval tuner."""
