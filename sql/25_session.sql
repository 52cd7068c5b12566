-- Checked before the session reset that ends a guard whose caller sent SQL
-- of its own: the session must hold exactly the prepared statements its
-- client cached, and none made by SQL PREPARE. Such SQL could DEALLOCATE a
-- cached statement and PREPARE its own under the same name, which the next
-- guard on the connection would run with its own tenant's proof and data.
-- A function rather than a DO block: its plan is kept for the session.
CREATE FUNCTION loyalty.statements_intact(p_cached bigint) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql)
           OPERATOR(pg_catalog.<>) p_cached
       OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) THEN
        RAISE EXCEPTION 'the prepared statements of this session were changed by SQL sent through a guard';
    END IF;
    RETURN true;
END
$$;
