"""The relation behind each managed and subject table, by OID.

A managed or subject table is named by schema and name; ``relid`` keeps the OID of the relation
it was registered as, so that a table renamed or moved to another schema (its name no longer
resolves, its OID still does) is reported as renamed, with its new name, instead of silently
falling out of retention (status, plan and the report flag it). The name stays what pgretention
acts on; the OID only says where the table went. Existing rows get the OID their name resolves to
now (NULL for a table that no longer exists). After a dump and restore the OIDs differ: a table
found under its name is fine whatever its OID.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE pgretention.managed_table ADD COLUMN relid oid;
        ALTER TABLE pgretention.subject_table ADD COLUMN relid oid;
        UPDATE pgretention.managed_table
        SET relid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', table_schema, table_name));
        UPDATE pgretention.subject_table
        SET relid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', table_schema, table_name));
        COMMENT ON COLUMN pgretention.managed_table.relid IS
            'OID of the table when it was taken under management: where it went when renamed or moved';
        COMMENT ON COLUMN pgretention.subject_table.relid IS
            'OID of the table when it was registered: where it went when renamed or moved';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
