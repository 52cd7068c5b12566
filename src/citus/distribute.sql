-- Distributes a migrated database over a Citus cluster by tenant_id
-- (Store::distribute, docs/citus.md). Runs as the migrator, in one
-- transaction, and does nothing when `tenants` is already distributed.
--
-- Citus refuses a foreign key between a distributed table and one that is
-- not distributed yet, in either direction, so every foreign key of schema
-- public is saved, dropped, and added back once every table is in place.
-- Citus also refuses a policy with a subquery: each `(SELECT f())` becomes
-- `f()`, which every shard then evaluates per scan (docs/citus.md).
DO $distribute$
DECLARE
    fk_tables text[];
    fk_names text[];
    fk_defs text[];
    policy record;
    copied record;
    tbl regclass;
    anchor regclass;
BEGIN
    -- The guard key is read inside every shard's policy check, where Citus
    -- refuses a query on any of its own tables, so each worker gets a plain
    -- copy of the table, outside Citus' metadata, on every call (a worker
    -- added later gets it from the next call). run_command_on_workers
    -- commits on each worker by itself; the copy is idempotent.
    FOR copied IN
        SELECT w.* FROM loyalty_secret.guard_key k, run_command_on_workers(format(
            'SET citus.enable_ddl_propagation = off; '
            'CREATE SCHEMA IF NOT EXISTS loyalty_secret; '
            'REVOKE ALL ON SCHEMA loyalty_secret FROM PUBLIC; '
            'CREATE TABLE IF NOT EXISTS loyalty_secret.guard_key ('
            '    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),'
            '    key bytea NOT NULL CHECK (length(key) = 32),'
            '    inner_pad bytea NOT NULL CHECK (length(inner_pad) = 64),'
            '    outer_pad bytea NOT NULL CHECK (length(outer_pad) = 64)); '
            'INSERT INTO loyalty_secret.guard_key VALUES (true, %L, %L, %L) '
            'ON CONFLICT (singleton) DO UPDATE SET key = EXCLUDED.key, '
            'inner_pad = EXCLUDED.inner_pad, outer_pad = EXCLUDED.outer_pad',
            k.key, k.inner_pad, k.outer_pad)) w
    LOOP
        IF NOT copied.success THEN
            RAISE EXCEPTION 'copying the guard key to %:%: %',
                copied.nodename, copied.nodeport, copied.result;
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'public.tenants'::regclass) THEN
        RETURN;
    END IF;
    SET LOCAL citus.enable_unsafe_triggers = on;
    SET LOCAL citus.multi_shard_modify_mode = 'sequential';

    SELECT array_agg(conrelid::regclass::text ORDER BY conrelid::regclass::text, conname),
           array_agg(conname::text ORDER BY conrelid::regclass::text, conname),
           array_agg(pg_get_constraintdef(oid) ORDER BY conrelid::regclass::text, conname)
      INTO fk_tables, fk_names, fk_defs
      FROM pg_constraint
     WHERE contype = 'f' AND connamespace = 'public'::regnamespace;
    FOR i IN 1 .. coalesce(cardinality(fk_names), 0) LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk_tables[i], fk_names[i]);
    END LOOP;

    FOR policy IN SELECT schemaname, tablename, policyname, qual, with_check
                    FROM pg_policies WHERE schemaname = 'public' LOOP
        EXECUTE format('ALTER POLICY %I ON %I.%I', policy.policyname, policy.schemaname,
                       policy.tablename)
             || coalesce(' USING (' || regexp_replace(policy.qual,
                             '\( SELECT (\w+)\(\) AS \w+\)', '\1()', 'g') || ')', '')
             || coalesce(' WITH CHECK (' || regexp_replace(policy.with_check,
                             '\( SELECT (\w+)\(\) AS \w+\)', '\1()', 'g') || ')', '');
    END LOOP;

    PERFORM create_reference_table('public.tenants');
    FOR tbl IN SELECT c.oid::regclass
                 FROM pg_class c
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                                    AND NOT a.attisdropped
                WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
                ORDER BY c.relname LOOP
        PERFORM create_distributed_table(tbl, 'tenant_id',
                                         colocate_with => coalesce(anchor::text, 'none'));
        anchor := coalesce(anchor, tbl);
    END LOOP;

    -- The coordinator sends the workers INSERTs that name every column, so
    -- a column-level INSERT grant cannot stand; what those columns may hold
    -- in a new row is kept by triggers (sql/35_new_rows.sql) and, for
    -- tenants, by the platform scope's policy.
    GRANT INSERT ON public.tenants, public.budgets, public.rules, public.voucher_codes
       TO loyalty_app;

    FOR i IN 1 .. coalesce(cardinality(fk_names), 0) LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk_tables[i], fk_names[i], fk_defs[i]);
    END LOOP;
END
$distribute$;
