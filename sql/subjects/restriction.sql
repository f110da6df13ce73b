-- Restriction of processing (GDPR art. 18): restricted identifiers are recorded by request_fulfil;
-- applications leave their rows out with is_restricted() or a view without them.

-- Applications exclude restricted subjects with this check (or the views below). SECURITY DEFINER:
-- it answers for one identifier at a time and nobody else reads pgretention.restriction. Granted to
-- pgretention's roles; an application's role gets it from the DBA (docs/subjects-and-holds.md):
--   GRANT USAGE ON SCHEMA pgretention TO app;
--   GRANT EXECUTE ON FUNCTION pgretention.is_restricted(text, text) TO app;
CREATE OR REPLACE FUNCTION pgretention.is_restricted(p_kind text, p_value text)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM pgretention.restriction r WHERE r.kind = p_kind AND r.value = p_value) $$;

-- Create <table>_unrestricted: the table without rows of restricted subjects, for applications.
-- The view is security_invoker (and security_barrier): whoever reads it reads the table with their
-- own rights, so the table's privileges and row level security hold for the view too; readers also
-- need EXECUTE on is_restricted (above). It is owned by the table's owner, who grants it like the
-- table. The caller must act for the table's owner (_user_table).
CREATE OR REPLACE FUNCTION pgretention.restriction_view_create(p_table text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st pgretention.subject_table;
    v_rel regclass;
    v_view text;
    v_qual_view text;
    v_cond text;
    v_existing regclass;
BEGIN
    st := pgretention._registered(p_table);
    v_rel := pgretention._user_table(st.table_schema || '.' || st.table_name, 'subject table');
    v_view := left(st.table_name, 49) || '_unrestricted';
    v_qual_view := format('%I.%I', st.table_schema, v_view);
    v_existing := to_regclass(v_qual_view);
    IF v_existing IS NOT NULL AND ((SELECT c.relkind FROM pg_class c WHERE c.oid = v_existing) <> 'v'
            OR NOT pg_has_role(session_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = v_existing), 'USAGE')) THEN
        RAISE EXCEPTION '% exists and is not a view of the table''s owner: pgretention does not replace it', v_qual_view
            USING ERRCODE = 'duplicate_table';
    END IF;
    SELECT string_agg(format('NOT pgretention.is_restricted(%L, t.%I::text)', sc.kind, sc.column_name),
                      ' AND ' ORDER BY sc.column_name)
      INTO v_cond FROM pgretention.subject_column sc WHERE sc.table_id = st.id;
    EXECUTE format('CREATE OR REPLACE VIEW %s WITH (security_invoker = true, security_barrier = true)'
                   ' AS SELECT t.* FROM %s t WHERE %s', v_qual_view, v_rel, v_cond);
    EXECUTE format('ALTER VIEW %s OWNER TO %I', v_qual_view, (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = v_rel));
    PERFORM pgretention._audit('subject.create_view', v_qual_view, '{}');
    RETURN v_qual_view;
END
$$;
