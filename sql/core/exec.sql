-- Acting on a user table with its owner's rights (security model: docs/security.md).
--
-- pgretention's functions belong to the role that installed it, often a superuser. Statements on a
-- user's table run that table's code: triggers, RLS policy expressions, check constraints, domain
-- checks, casts to json of the owner's types, index expressions. Run as the installing role, that
-- code would run with its rights, and a table owner could make itself superuser. So every
-- statement pgretention runs on a table owned by another role goes through an executor that runs
-- as that owner: `pgretention_exec.owner_<oid of the owner>(sql, want_value)`, SECURITY DEFINER,
-- owned by the table's owner, with a fixed search_path.
--
-- * The schema pgretention_exec belongs to the installing role; nobody else has USAGE on it, so no
--   one can call an executor, nor ALTER or REPLACE one (that needs to name it), not even its owner.
-- * Before every call the executor is checked in pg_proc: its owner is the table's current owner,
--   it is SECURITY DEFINER, its body and settings are exactly what pgretention wrote. An owner who
--   dropped it (DROP OWNED) gets a new one; one reassigned to another role (REASSIGN OWNED) or
--   changed in any way is refused and re-created.
-- * Making a function owned by X: a superuser may; otherwise the installing role must be a member
--   of X (GRANT X TO <installing role>), and X gets CREATE on pgretention_exec for the moment of
--   the ALTER OWNER, in the same transaction. Without either, the call fails naming the grant.
-- * A table owned by the installing role itself needs no executor: the statement runs directly,
--   which is the same rights.
-- What goes through an executor: every statement that reads or writes rows of a user's table
-- (DELETE, UPDATE, INSERT, TRUNCATE, SELECT of row data: to_jsonb and casts of the owner's types
-- may run the owner's cast functions). DDL that runs none of the table's code stays direct: DETACH,
-- DROP, SET SCHEMA, CREATE TABLE ... LIKE, ATTACH of a table whose rows pgretention wrote; index
-- builds run as the table's owner by PostgreSQL itself (security-restricted).
-- For a detached partition (no longer in the owner's tree) callers pass the managed table as
-- p_rel: the rights are always those of the owner of the table the data belongs to.

CREATE SCHEMA IF NOT EXISTS pgretention_exec;
REVOKE ALL ON SCHEMA pgretention_exec FROM PUBLIC;

-- The body of every executor. p_value: the statement returns one value (jsonb), returned as is;
-- otherwise the number of rows the statement processed is returned (as a jsonb number). p_args is
-- the statement's one parameter ($1, a text array): values that must not appear in the statement's
-- text (a key: statement texts show up in error contexts and logs).
CREATE OR REPLACE FUNCTION pgretention._executor_body()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $body$
    SELECT $$
DECLARE
    v_value jsonb;
    v_rows bigint;
BEGIN
    IF p_value THEN
        EXECUTE p_sql INTO v_value USING p_args;
        RETURN v_value;
    END IF;
    EXECUTE p_sql USING p_args;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN pg_catalog.to_jsonb(v_rows);
END
$$
$body$;

-- Objects in this session's temporary schema that name lookups could find: relations, types and
-- domains, collations, conversions, text-search objects, operator classes.
CREATE OR REPLACE FUNCTION pgretention._temp_objects()
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.pg_my_temp_schema() = 0 THEN 0 ELSE
           (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_type WHERE typnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_proc WHERE pronamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_operator WHERE oprnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_collation WHERE collnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_conversion WHERE connamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_opclass WHERE opcnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_opfamily WHERE opfnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_ts_config WHERE cfgnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_ts_dict WHERE dictnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_ts_parser WHERE prsnamespace = pg_catalog.pg_my_temp_schema())
         + (SELECT count(*) FROM pg_catalog.pg_ts_template WHERE tmplnamespace = pg_catalog.pg_my_temp_schema())
    END
$$;

-- Refuse to go on when this session has temporary objects: code that puts pg_temp ahead of
-- pg_catalog in its search_path (pg_partman does, for every call) would resolve them first, with
-- the rights of pgretention's owner.
CREATE OR REPLACE FUNCTION pgretention._require_no_temp_objects(p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pgretention._temp_objects() > 0 THEN
        RAISE EXCEPTION 'pgretention: % refused: this session has temporary objects (schema %)',
                        p_what, pg_catalog.pg_my_temp_schema()::regnamespace
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'pg_partman looks up names in the temporary schema first; run it from a session '
                         'without temporary tables, views or types (the scheduled run has none)';
    END IF;
END
$$;

-- The executor for role p_owner: checked, created or re-created as needed; its qualified name.
CREATE OR REPLACE FUNCTION pgretention._executor(p_owner oid)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name name := pg_catalog.format('owner_%s', p_owner);
    v_owner name := (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = p_owner);
    v_me name := current_user;
    v_fn regprocedure;
    v_ok boolean;
    v_found boolean := false;
    v_grant boolean;
BEGIN
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'role % does not exist', p_owner USING ERRCODE = 'undefined_object';
    END IF;
    -- what pgretention wrote, and nothing else under that name (an earlier release's executor, one
    -- altered or reassigned behind pgretention's back: the schema is the installing role's, it drops them)
    FOR v_fn, v_ok IN
        SELECT p.oid::regprocedure,
               p.proowner = p_owner AND p.prosecdef AND p.prosrc = pgretention._executor_body()
               AND p.proconfig = ARRAY['search_path=pg_catalog, pg_temp'] AND p.prorettype = 'jsonb'::regtype
               AND p.proargtypes = '25 16 1009'::oidvector AND p.provolatile = 'v' AND p.prokind = 'f'
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'pgretention_exec'::regnamespace AND p.proname = v_name
    LOOP
        IF v_ok THEN
            v_found := true;
        ELSE
            EXECUTE pg_catalog.format('DROP FUNCTION %s', v_fn);
        END IF;
    END LOOP;
    IF v_found THEN
        RETURN pg_catalog.format('pgretention_exec.%I', v_name);
    END IF;
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = v_me)
       AND NOT pg_catalog.pg_has_role(v_me, p_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'pgretention cannot act as role %, the owner of the table: its owner % is neither a superuser nor a member of %',
                        v_owner, v_me, v_owner
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('GRANT %I TO %I', v_owner, v_me);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE FUNCTION pgretention_exec.%I(p_sql text, p_value boolean, p_args text[]) RETURNS jsonb LANGUAGE plpgsql'
        ' VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
        v_name, pgretention._executor_body());
    v_grant := NOT pg_catalog.has_schema_privilege(p_owner, 'pgretention_exec', 'CREATE');
    IF v_grant THEN
        EXECUTE pg_catalog.format('GRANT CREATE ON SCHEMA pgretention_exec TO %I', v_owner);
    END IF;
    EXECUTE pg_catalog.format('ALTER FUNCTION pgretention_exec.%I(text, boolean, text[]) OWNER TO %I', v_name, v_owner);
    IF v_grant THEN
        EXECUTE pg_catalog.format('REVOKE CREATE ON SCHEMA pgretention_exec FROM %I', v_owner);
    END IF;
    RETURN pg_catalog.format('pgretention_exec.%I', v_name);
END
$$;

-- The role whose rights statements on p_rel run with: the owner of the table a partition belongs
-- to (the root of its partition tree), so that a partition created by someone else (pg_partman
-- creates them as its caller) never makes the owner's triggers run with other rights.
CREATE OR REPLACE FUNCTION pgretention._rel_owner(p_rel regclass)
RETURNS oid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner oid;
BEGIN
    SELECT c.relowner INTO v_owner FROM pg_catalog.pg_class c
    WHERE c.oid = coalesce(pg_catalog.pg_partition_root(p_rel), p_rel);
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'relation % does not exist', p_rel USING ERRCODE = 'undefined_table';
    END IF;
    RETURN v_owner;
END
$$;

-- Give p_rel to p_owner when it is someone else's: a partition pg_partman or pgretention created as
-- the installing role, a partition detached from the owner's table. Changing an owner runs none of
-- the table's code; the owner then may read and write it directly.
CREATE OR REPLACE FUNCTION pgretention._give_to_owner(p_rel regclass, p_owner oid)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = p_rel) <> p_owner THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s OWNER TO %I', p_rel, pg_catalog.pg_get_userbyid(p_owner));
    END IF;
END
$$;

-- p_parent and every partition under it to the owner of the table it belongs to.
CREATE OR REPLACE FUNCTION pgretention._give_tree_to_owner(p_parent regclass)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgretention._give_to_owner(t.relid, pgretention._rel_owner(p_parent))
    FROM pg_catalog.pg_partition_tree(p_parent) t
$$;

-- Run p_sql with the rights of p_rel's owner. p_value: the statement returns one jsonb value,
-- returned as is; otherwise the number of rows it processed (a jsonb number). The one place that
-- picks the direct path (pgretention's owner owns the table) or the owner's executor.
CREATE OR REPLACE FUNCTION pgretention._as_owner_run(p_rel regclass, p_sql text, p_value boolean, p_args text[])
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_owner oid := pgretention._rel_owner(p_rel);
    v_rows bigint;
    v_result jsonb;
BEGIN
    PERFORM pgretention._give_to_owner(p_rel, v_owner);
    IF v_owner <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        EXECUTE pg_catalog.format('SELECT %s($1, $2, $3)', pgretention._executor(v_owner)) INTO v_result
            USING p_sql, p_value, p_args;
    ELSIF p_value THEN
        EXECUTE p_sql INTO v_result USING p_args;
    ELSE
        EXECUTE p_sql USING p_args;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        v_result := pg_catalog.to_jsonb(v_rows);
    END IF;
    RETURN v_result;
END
$$;

-- Run p_sql with the rights of p_rel's owner; the number of rows it processed.
CREATE OR REPLACE FUNCTION pgretention._as_owner(p_rel regclass, p_sql text, p_args text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (pgretention._as_owner_run(p_rel, p_sql, false, p_args) #>> '{}')::bigint $$;

-- Run p_sql, a statement returning one jsonb value, with the rights of p_rel's owner; that value.
CREATE OR REPLACE FUNCTION pgretention._as_owner_value(p_rel regclass, p_sql text, p_args text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention._as_owner_run(p_rel, p_sql, true, p_args) $$;

-- Rows of a query run with the owner's rights: p_query is any SELECT; each row as jsonb.
CREATE OR REPLACE FUNCTION pgretention._as_owner_rows(p_rel regclass, p_query text)
RETURNS SETOF jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.value
    FROM pg_catalog.jsonb_array_elements(coalesce(pgretention._as_owner_value(
             p_rel, pg_catalog.format('SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(q)) FROM (%s) q', p_query)),
             '[]'::jsonb)) e
$$;
