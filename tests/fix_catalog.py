"""A comparable snapshot of what a database holds: install, uninstall and upgrade diffs, and proof that refused input changed nothing."""

from __future__ import annotations

from typing import Any

import psycopg

QUERIES = {
    "namespaces": "SELECT nspname, pg_get_userbyid(nspowner), nspacl::text FROM pg_namespace"
                  " WHERE nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%'",
    "relations": "SELECT n.nspname, c.relname, c.relkind, c.relacl::text, obj_description(c.oid, 'pg_class')"
                 " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                 " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
    "columns": "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
               " pg_get_expr(d.adbin, d.adrelid), a.attidentity"
               " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
               " JOIN pg_namespace n ON n.oid = c.relnamespace"
               " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
               " WHERE a.attnum > 0 AND NOT a.attisdropped"
               " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'",
    "constraints": "SELECT n.nspname, conrelid::regclass::text, conname, pg_get_constraintdef(k.oid)"
                   " FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace"
                   " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
    "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes"
               " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    "functions": "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),"
                 " pg_get_function_result(p.oid), p.prosecdef, p.proconfig::text, p.proacl::text, md5(p.prosrc)"
                 " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                 " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
    "extensions": "SELECT extname, extversion, extnamespace::regnamespace::text FROM pg_extension",
    "roles": "SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%'",
    "memberships": "SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members",
    "views": "SELECT schemaname, viewname, md5(definition) FROM pg_views"
             " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
}


def snapshot(conn: psycopg.Connection[Any], exclude_schemas: tuple[str, ...] = ()) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for key, query in QUERIES.items():
        rows = conn.execute(query).fetchall()  # type: ignore[arg-type]
        if exclude_schemas and key not in ("extensions", "roles", "memberships", "triggers"):
            rows = [r for r in rows if r[0] not in exclude_schemas]
        out[key] = sorted(rows, key=repr)
    return out


def diff(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in a.keys() | b.keys():
        sa, sb = set(a.get(key, [])), set(b.get(key, []))
        if sa != sb:
            out[key] = {"only_before": sorted(sa - sb, key=repr), "only_after": sorted(sb - sa, key=repr)}
    return out
