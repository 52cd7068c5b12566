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
