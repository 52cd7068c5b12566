-- Checked before the session reset that ends a guard whose caller sent SQL
-- of its own: the session must hold exactly the prepared statements its
-- client cached, and none made by SQL PREPARE. Such SQL could DEALLOCATE a
-- cached statement and PREPARE its own under the same name, which the next
-- guard on the connection would run with its own tenant's proof and data.
-- A function rather than a DO block: its plan is kept for the session.
CREATE FUNCTION loyalty.statements_intact(p_cached bigint) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    ours bigint;
    prepared_by_sql boolean;
BEGIN
    -- One pass: the view builds every statement's text on each read.
    SELECT pg_catalog.count(*) FILTER (WHERE NOT from_sql), pg_catalog.bool_or(from_sql)
      INTO ours, prepared_by_sql
      FROM pg_catalog.pg_prepared_statements;
    IF ours OPERATOR(pg_catalog.<>) p_cached OR prepared_by_sql THEN
        RAISE EXCEPTION 'the prepared statements of this session were changed by SQL sent through a guard';
    END IF;
    RETURN true;
END
$$;
