"""pgretention: database-native data retention for PostgreSQL."""

__version__ = "0.1.0"
