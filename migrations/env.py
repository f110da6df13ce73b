"""Alembic environment for the pgretention catalog.

The installer hands over an open connection (``config.attributes["connection"]``) so the catalog
tables, the functions replayed from ``sql/`` and the grants are applied in one transaction.
"""

from __future__ import annotations

from alembic import context

SCHEMA = "pgretention"

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the installer always passes a connection
    raise RuntimeError("run migrations through `pgretention install` / `pgretention upgrade`")

context.configure(
    connection=connection,
    version_table_schema=SCHEMA,
    version_table="alembic_version",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
