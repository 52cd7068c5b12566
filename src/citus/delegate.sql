-- Delegates every money function to the worker that holds its tenant's
-- shards: the SECURITY DEFINER functions of the SQL layer whose first
-- argument is p_tenant_id. A call `SELECT loyalty.f(tenant, ...)` then runs
-- on that worker in one hop, inside the guard's transaction
-- (force_delegation). Does nothing on plain PostgreSQL or before
-- Store::distribute; run again after every rebuild of the layer, which drops
-- the functions with their delegation.
DO $delegate$
DECLARE
    f regprocedure;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                    WHERE logicalrelid = 'public.issuances'::regclass) THEN
        RETURN;
    END IF;
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_proc p
              WHERE p.pronamespace = 'loyalty'::regnamespace AND p.prosecdef
                AND p.proargnames[1] = 'p_tenant_id'
              ORDER BY p.oid LOOP
        PERFORM create_distributed_function(f, 'p_tenant_id',
                                            colocate_with => 'issuances', force_delegation => true);
        -- A generic plan of a statement in the function leaves the tenant a
        -- parameter, and Citus cannot plan some of those (a CTE that writes
        -- two tables, a call in FROM): every call is planned for its values.
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_custom_plan', f);
    END LOOP;
END
$delegate$;
