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
CREATE FUNCTION loyalty.enter_tenant(p_tenant text, p_proof text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_catalog.set_config('app.tenant_id', p_tenant, true),
            pg_catalog.set_config('app.tenant_proof', p_proof, true);
    PERFORM loyalty.assert_tenant_active();
    RETURN true;
END
$$;

-- The platform scope's context (see in_platform_scope()): the same one-statement
-- shape as enter_tenant, for tenant provisioning.
CREATE FUNCTION loyalty.enter_platform(p_proof text) RETURNS boolean
    LANGUAGE sql
    AS $$ SELECT pg_catalog.set_config('app.platform_proof', p_proof, true) IS NOT NULL $$;
