-- Values: intervals given as text, and times of a managed table's time column (timestamptz,
-- timestamp or date in the table's zone, epoch seconds) as absolute time and back.

-- A positive interval, or an error naming what it is for. Every field must be positive or zero
-- (months, days and time are kept apart by PostgreSQL and mean different lengths: '1 mon -30 days'
-- is zero in February, positive in March, so a mixed sign is refused), and one of them positive.
-- Every interval a caller gives pgretention (periods, partition intervals, interval settings)
-- comes through here.
CREATE OR REPLACE FUNCTION pgretention._parse_interval(p_what text, p_value text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v interval;
    v_months int;
    v_days int;
    v_time interval;
BEGIN
    IF p_value IS NULL OR btrim(p_value) = '' THEN
        RAISE EXCEPTION '% must be given', p_what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        v := p_value::interval;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'invalid % %: expected an interval such as ''1 day'' or ''13 months''',
            p_what, quote_literal(p_value) USING ERRCODE = 'invalid_parameter_value';
    END;
    IF isfinite(v) IS FALSE THEN
        RAISE EXCEPTION 'invalid % %: must be finite', p_what, quote_literal(p_value) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_months := (extract(year FROM v) * 12 + extract(month FROM v))::int;
    v_days := extract(day FROM v)::int;
    v_time := v - make_interval(months => v_months, days => v_days);  -- what is left: the time part
    IF v_months < 0 OR v_days < 0 OR v_time < interval '0' THEN
        RAISE EXCEPTION 'invalid % %: every part must be positive (months %, days %, time %)', p_what,
            quote_literal(p_value), v_months, v_days, v_time USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v <= interval '0' THEN
        RAISE EXCEPTION 'invalid % %: must be positive', p_what, quote_literal(p_value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v > interval '200 years' THEN
        RAISE EXCEPTION 'invalid % %: longer than 200 years', p_what, quote_literal(p_value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v;
END
$$;

-- A partition bound literal of the time column (text as PostgreSQL prints it) -> absolute time.
-- timestamp and date columns hold wall-clock time of the table's zone.
CREATE OR REPLACE FUNCTION pgretention._to_abs(p_value text, p_type text, p_zone text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN CASE p_type
        WHEN 'timestamptz' THEN p_value::timestamptz
        WHEN 'timestamp' THEN p_value::timestamp AT TIME ZONE p_zone
        WHEN 'date' THEN p_value::date::timestamp AT TIME ZONE p_zone
        -- epoch seconds; the lowest integers (a historical partition's lower bound) mean -infinity
        WHEN 'epoch' THEN CASE WHEN p_value::numeric < -210866803200 THEN '-infinity'::timestamptz
                               ELSE to_timestamp(p_value::float8) END
    END;
END
$$;

-- Absolute time -> a literal of the column's type, for comparisons in dynamic SQL.
CREATE OR REPLACE FUNCTION pgretention._typed_literal(p_abs timestamptz, p_type text, p_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    RETURN CASE p_type
        WHEN 'timestamptz' THEN format('%L::timestamptz', p_abs)
        WHEN 'timestamp' THEN format('%L::timestamp', p_abs AT TIME ZONE p_zone)
        -- a row dated d covers the whole day: it is older than the cutoff when d < cutoff's day
        WHEN 'date' THEN format('%L::date', (p_abs AT TIME ZONE p_zone)::date)
        -- a row at second e covers that whole second: older than the cutoff when e < floor(cutoff)
        WHEN 'epoch' THEN format('%L::bigint', floor(extract(epoch FROM p_abs))::bigint)
    END;
END
$$;

-- A grid point (wall-clock time of the partition bounds) as absolute time.
CREATE OR REPLACE FUNCTION pgretention._grid_abs(p_grid timestamp, p_type text, p_zone text)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_type IN ('timestamptz', 'epoch') THEN p_grid AT TIME ZONE 'UTC' ELSE p_grid AT TIME ZONE p_zone END
$$;

-- An expression giving the absolute time of a managed table's time column, for dynamic SQL.
CREATE OR REPLACE FUNCTION pgretention._time_expr(p_column name, p_type text, p_zone text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_type
        WHEN 'timestamptz' THEN format('%I', p_column)
        WHEN 'timestamp' THEN format('(%I AT TIME ZONE %L)', p_column, p_zone)
        WHEN 'epoch' THEN format('to_timestamp(%I)', p_column)
        ELSE format('(%I::timestamp AT TIME ZONE %L)', p_column, p_zone)
    END
$$;
