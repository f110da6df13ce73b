-- Restriction of processing (GDPR art. 18): restricted identifiers are recorded by request_fulfil;
-- applications leave their rows out with is_restricted() or a view without them.

-- Applications exclude restricted subjects with this check (or the views below).
CREATE OR REPLACE FUNCTION pgretention.is_restricted(p_kind text, p_value text)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM pgretention.restriction r WHERE r.kind = p_kind AND r.value = p_value) $$;

-- Create <table>_unrestricted: the table without rows of restricted subjects, for applications.
CREATE OR REPLACE FUNCTION pgretention.restriction_view_create(p_table text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st pgretention.subject_table;
    v_view text;
    v_cond text;
BEGIN
    st := pgretention._registered(p_table);
    v_view := left(st.table_name, 49) || '_unrestricted';
    SELECT string_agg(format('NOT EXISTS (SELECT FROM pgretention.restriction r WHERE r.kind = %L AND r.value = t.%I::text)',
                             sc.kind, sc.column_name), ' AND ' ORDER BY sc.column_name)
      INTO v_cond FROM pgretention.subject_column sc WHERE sc.table_id = st.id;
    EXECUTE format('CREATE OR REPLACE VIEW %I.%I WITH (security_barrier) AS SELECT t.* FROM %I.%I t WHERE %s',
                   st.table_schema, v_view, st.table_schema, st.table_name, v_cond);
    PERFORM pgretention._audit('subject.create_view', format('%I.%I', st.table_schema, v_view), '{}');
    RETURN format('%I.%I', st.table_schema, v_view);
END
$$;
