-- Runs inside the guard's opening round trip, as loyalty_app: the tenants
-- policy already limits the lookup to the tenant in context.
CREATE FUNCTION loyalty.assert_tenant_active() RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    tenant_status text;
BEGIN
    SELECT status INTO tenant_status FROM public.tenants WHERE id = public.current_tenant_id();
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('unknown_tenant', format('unknown tenant %s', public.current_tenant_id()));
    ELSIF tenant_status <> 'active' THEN
        PERFORM loyalty.refuse('tenant_suspended',
            format('tenant %s is %s', public.current_tenant_id(), tenant_status));
    END IF;
END
$$;

-- The guard's tenant context, set and checked in one statement the client
-- can prepare once per connection: the tenant with its proof (see
-- current_tenant_id()), then the tenant check. Anyone may call it; only the
-- guard knows a proof that makes the context count.
--
-- The settings are made with SET LOCAL rather than set_config(): on Citus
-- only a SET LOCAL reaches the worker nodes (with propagate_set_commands =
-- 'local'), where every shard's policy checks the proof again. Sent from
-- here, the proof travels to the workers but never appears in the query
-- text of the client's session (docs/citus.md). On plain PostgreSQL the
-- citus setting is an inert placeholder.
CREATE FUNCTION loyalty.enter_tenant(p_tenant text, p_proof text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_catalog.set_config('citus.propagate_set_commands', 'local', true);
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_id = %L', p_tenant);
    EXECUTE pg_catalog.format('SET LOCAL app.tenant_proof = %L', p_proof);
    PERFORM loyalty.assert_tenant_active();
    RETURN true;
END
$$;

-- The tenant a money function was called for, which must be the guard's:
-- the argument is what Citus routes a delegated call by, and the guard's
-- verified context is what it may act for.
CREATE FUNCTION loyalty.tenant_argument(p_tenant_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF p_tenant_id IS NULL OR p_tenant_id IS DISTINCT FROM public.current_tenant_id() THEN
        PERFORM loyalty.refuse('invalid_argument', 'the tenant argument is not the guard''s tenant',
            jsonb_build_object('argument', 'tenant_id', 'reason', 'not the tenant in context'));
    END IF;
    -- A money function's advisory locks and deferred checks only meet every
    -- other call's on the tenant's own node; a call Citus did not delegate
    -- (a generic plan of the call, for one) would take them elsewhere.
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL AND NOT loyalty.on_tenant_node(p_tenant_id) THEN
        RAISE EXCEPTION 'a money function for tenant % ran away from the tenant''s node', p_tenant_id
            USING ERRCODE = '55000',
                  HINT = 'Citus delegates a bare SELECT loyalty.f(tenant, ...) with custom plans; '
                         'leave plan_cache_mode alone (docs/citus.md)';
    END IF;
    RETURN p_tenant_id;
END
$$;

-- Whether this node holds the tenant's shards, or nothing is distributed
-- yet. plpgsql, so the Citus catalogs are only looked up where they exist.
CREATE FUNCTION loyalty.on_tenant_node(p_tenant_id uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                    WHERE logicalrelid = 'public.issuances'::regclass) THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement p
                     JOIN pg_catalog.pg_dist_local_group g USING (groupid)
                    WHERE p.shardid = pg_catalog.get_shard_id_for_distribution_column(
                                          'public.issuances', p_tenant_id));
END
$$;

-- The platform scope's context (see in_platform_scope()): the same one-statement
-- shape as enter_tenant, for tenant provisioning.
CREATE FUNCTION loyalty.enter_platform(p_proof text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_catalog.set_config('citus.propagate_set_commands', 'local', true);
    EXECUTE pg_catalog.format('SET LOCAL app.platform_proof = %L', p_proof);
    RETURN true;
END
$$;
