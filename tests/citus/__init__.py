"""pgretention on a Citus coordinator (needs PGRETENTION_CITUS_DSN; marker citus)."""
