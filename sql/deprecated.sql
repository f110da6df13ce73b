-- Deprecated names, kept for one release: the public SQL API now reads <object>_<verb>, like the CLI
-- groups (docs/sql-api.md has the old -> new table). Each old function is a thin SECURITY INVOKER
-- wrapper in SQL that calls the new one with the same arguments, granted to the same roles as
-- before (grants.sql); the two procedures are PL/pgSQL wrappers, because a procedure called from a
-- SQL-language procedure cannot commit. Delete this file (and the grants of these names) in the
-- next release: the installer then drops them from upgraded databases (cleanup.sql).

CREATE OR REPLACE FUNCTION pgretention.create_table(
    p_table text,
    p_columns text,
    p_time_column text,
    p_interval text,
    p_classes jsonb,
    p_class_column text DEFAULT NULL,
    p_default_class text DEFAULT NULL,
    p_premake int DEFAULT 4,
    p_time_zone text DEFAULT 'UTC',
    p_start timestamptz DEFAULT NULL,
    p_min_drop_after text DEFAULT NULL,
    p_max_drop_after text DEFAULT NULL,
    p_on_expiry text DEFAULT 'drop',
    p_archive_schema text DEFAULT NULL,
    p_null_time text DEFAULT 'keep',
    p_layout text DEFAULT NULL,
    p_distribute_by text DEFAULT NULL)
RETURNS int
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.table_create(p_table, p_columns, p_time_column, p_interval, p_classes, p_class_column, p_default_class,
    p_premake, p_time_zone, p_start, p_min_drop_after, p_max_drop_after, p_on_expiry,
    p_archive_schema, p_null_time, p_layout, p_distribute_by) $$;
COMMENT ON FUNCTION pgretention.create_table(text, text, text, text, jsonb, text, text, int, text, timestamptz, text, text, text, text, text, text, text) IS 'deprecated: use pgretention.table_create';

CREATE OR REPLACE FUNCTION pgretention.manage_table(
    p_table text,
    p_time_column text,
    p_interval text,
    p_classes jsonb,
    p_premake int DEFAULT 4,
    p_time_zone text DEFAULT 'UTC',
    p_start timestamptz DEFAULT NULL,
    p_on_expiry text DEFAULT 'drop',
    p_archive_schema text DEFAULT NULL,
    p_null_time text DEFAULT 'keep')
RETURNS int
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.table_manage(p_table, p_time_column, p_interval, p_classes, p_premake, p_time_zone, p_start, p_on_expiry,
    p_archive_schema, p_null_time) $$;
COMMENT ON FUNCTION pgretention.manage_table(text, text, text, jsonb, int, text, timestamptz, text, text, text) IS 'deprecated: use pgretention.table_manage';

CREATE OR REPLACE FUNCTION pgretention.release_table(p_table text)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.table_release(p_table) $$;
COMMENT ON FUNCTION pgretention.release_table(text) IS 'deprecated: use pgretention.table_release';

CREATE OR REPLACE FUNCTION pgretention.add_class(
    p_table text,
    p_class text,
    p_drop_after text,
    p_anonymise_after text DEFAULT NULL,
    p_members text[] DEFAULT NULL,
    p_now timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.class_add(p_table, p_class, p_drop_after, p_anonymise_after, p_members, p_now) $$;
COMMENT ON FUNCTION pgretention.add_class(text, text, text, text, text[], timestamptz) IS 'deprecated: use pgretention.class_add';

CREATE OR REPLACE FUNCTION pgretention.set_class(
    p_table text,
    p_class text,
    p_drop_after text,
    p_anonymise_after text DEFAULT NULL)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.class_set(p_table, p_class, p_drop_after, p_anonymise_after) $$;
COMMENT ON FUNCTION pgretention.set_class(text, text, text, text) IS 'deprecated: use pgretention.class_set';

CREATE OR REPLACE FUNCTION pgretention.assign_member(
    p_table text,
    p_value text,
    p_class text,
    p_now timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.member_assign(p_table, p_value, p_class, p_now) $$;
COMMENT ON FUNCTION pgretention.assign_member(text, text, text, timestamptz) IS 'deprecated: use pgretention.member_assign';

CREATE OR REPLACE FUNCTION pgretention.set_partition_interval(p_table text, p_interval text, p_premake int DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.table_set_interval(p_table, p_interval, p_premake) $$;
COMMENT ON FUNCTION pgretention.set_partition_interval(text, text, int) IS 'deprecated: use pgretention.table_set_interval';

CREATE OR REPLACE FUNCTION pgretention.create_entity_rule(
    p_name text,
    p_table text,
    p_key_column text,
    p_activity jsonb,
    p_period text,
    p_action text DEFAULT 'delete',
    p_anonymise jsonb DEFAULT NULL,
    p_dependants jsonb DEFAULT '[]',
    p_parent_column text DEFAULT NULL,
    p_exempt_column text DEFAULT NULL,
    p_notice_period text DEFAULT NULL)
RETURNS int
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.entity_rule_create(p_name, p_table, p_key_column, p_activity, p_period, p_action, p_anonymise, p_dependants,
    p_parent_column, p_exempt_column, p_notice_period) $$;
COMMENT ON FUNCTION pgretention.create_entity_rule(text, text, text, jsonb, text, text, jsonb, jsonb, text, text, text) IS 'deprecated: use pgretention.entity_rule_create';

CREATE OR REPLACE FUNCTION pgretention.drop_entity_rule(p_name text)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.entity_rule_drop(p_name) $$;
COMMENT ON FUNCTION pgretention.drop_entity_rule(text) IS 'deprecated: use pgretention.entity_rule_drop';

CREATE OR REPLACE FUNCTION pgretention.erase_entity(p_rule text, p_key text)
RETURNS bigint
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.entity_erase(p_rule, p_key) $$;
COMMENT ON FUNCTION pgretention.erase_entity(text, text) IS 'deprecated: use pgretention.entity_erase';

CREATE OR REPLACE PROCEDURE pgretention.run_entities(
    p_now timestamptz DEFAULT NULL,
    p_rule text DEFAULT NULL,
    p_runner text DEFAULT 'sql')
LANGUAGE plpgsql
AS $$ BEGIN CALL pgretention.entity_run(p_now, p_rule, p_runner); END $$;
COMMENT ON PROCEDURE pgretention.run_entities(timestamptz, text, text) IS 'deprecated: use pgretention.entity_run';

CREATE OR REPLACE FUNCTION pgretention.anon_set_rule(p_table text, p_column text, p_method text, p_param text DEFAULT NULL)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.anon_rule_set(p_table, p_column, p_method, p_param) $$;
COMMENT ON FUNCTION pgretention.anon_set_rule(text, text, text, text) IS 'deprecated: use pgretention.anon_rule_set';

CREATE OR REPLACE PROCEDURE pgretention.run_anonymiser(p_now timestamptz DEFAULT NULL, p_table text DEFAULT NULL)
LANGUAGE plpgsql
AS $$ BEGIN CALL pgretention.anon_run(p_now, p_table); END $$;
COMMENT ON PROCEDURE pgretention.run_anonymiser(timestamptz, text) IS 'deprecated: use pgretention.anon_run';

CREATE OR REPLACE FUNCTION pgretention.add_rollup(
    p_table text,
    p_name text,
    p_group_by jsonb,
    p_measures jsonb,
    p_min_group_size int DEFAULT 5)
RETURNS text
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.rollup_add(p_table, p_name, p_group_by, p_measures, p_min_group_size) $$;
COMMENT ON FUNCTION pgretention.add_rollup(text, text, jsonb, jsonb, int) IS 'deprecated: use pgretention.rollup_add';

CREATE OR REPLACE FUNCTION pgretention.encrypt_field(p_value text, p_purpose text)
RETURNS bytea
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.field_encrypt(p_value, p_purpose) $$;
COMMENT ON FUNCTION pgretention.encrypt_field(text, text) IS 'deprecated: use pgretention.field_encrypt';

CREATE OR REPLACE FUNCTION pgretention.decrypt_field(p_value bytea, p_purpose text)
RETURNS text
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.field_decrypt(p_value, p_purpose) $$;
COMMENT ON FUNCTION pgretention.decrypt_field(bytea, text) IS 'deprecated: use pgretention.field_decrypt';

CREATE OR REPLACE FUNCTION pgretention.register_subject_table(
    p_table text,
    p_columns jsonb,
    p_tenant_column text DEFAULT NULL,
    p_time_column text DEFAULT NULL,
    p_erasure text DEFAULT 'delete',
    p_anonymise jsonb DEFAULT '{}',
    p_note text DEFAULT NULL)
RETURNS int
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.subject_table_register(p_table, p_columns, p_tenant_column, p_time_column, p_erasure, p_anonymise, p_note) $$;
COMMENT ON FUNCTION pgretention.register_subject_table(text, jsonb, text, text, text, jsonb, text) IS 'deprecated: use pgretention.subject_table_register';

CREATE OR REPLACE FUNCTION pgretention.register_tenant(p_name text)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.tenant_register(p_name) $$;
COMMENT ON FUNCTION pgretention.register_tenant(text) IS 'deprecated: use pgretention.tenant_register';

CREATE OR REPLACE FUNCTION pgretention.create_unrestricted_view(p_table text)
RETURNS text
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.restriction_view_create(p_table) $$;
COMMENT ON FUNCTION pgretention.create_unrestricted_view(text) IS 'deprecated: use pgretention.restriction_view_create';

CREATE OR REPLACE FUNCTION pgretention.verify_audit()
RETURNS TABLE (ok boolean, records bigint, first_broken_id bigint, reason text)
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgretention.audit_verify() $$;
COMMENT ON FUNCTION pgretention.verify_audit() IS 'deprecated: use pgretention.audit_verify';

CREATE OR REPLACE FUNCTION pgretention.set_setting(p_name text, p_value text)
RETURNS void
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.setting_set(p_name, p_value) $$;
COMMENT ON FUNCTION pgretention.set_setting(text, text) IS 'deprecated: use pgretention.setting_set';

CREATE OR REPLACE FUNCTION pgretention.unadopt(p_table text)
RETURNS bigint
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention.adopt_undo(p_table) $$;
COMMENT ON FUNCTION pgretention.unadopt(text) IS 'deprecated: use pgretention.adopt_undo';

CREATE OR REPLACE FUNCTION pgretention.overdue_requests_at(p_now timestamptz)
RETURNS TABLE (id bigint, kind text, tenant text, received_at timestamptz, deadline timestamptz, overdue_by interval)
LANGUAGE sql
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgretention.request_overdue(p_now) $$;
COMMENT ON FUNCTION pgretention.overdue_requests_at(timestamptz) IS 'deprecated: use pgretention.request_overdue';

-- Key tables of the previous release, now views of the secret-key store (core/keys.sql), readable by
-- the owner only as before. pgretention.anon_key (anonymiser/keys.sql) stays: it is how admins and
-- auditors see the epochs.
CREATE OR REPLACE VIEW pgretention.field_key AS
SELECT substr(s.purpose, 7) AS purpose, encode(s.key, 'base64') AS key, s.created_at
FROM pgretention.keyring s
WHERE s.purpose LIKE 'field:%';
COMMENT ON VIEW pgretention.field_key IS 'deprecated: keys live in pgretention.keyring (purpose field:<purpose>)';

CREATE OR REPLACE VIEW pgretention.entity_hash_key AS
SELECT s.key AS hash_key, s.created_at
FROM pgretention.keyring s
WHERE s.purpose = 'entity';
COMMENT ON VIEW pgretention.entity_hash_key IS 'deprecated: the key lives in pgretention.keyring (purpose entity)';
