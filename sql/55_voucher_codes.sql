-- The moves of a voucher code a service makes by hand: a reserved code
-- delivered to its customer ('issued', idempotent), an available one withdrawn from the
-- pool ('invalid'). loyalty_app may import codes but not set a status, so a
-- guard's own SQL cannot put a code back in the pool or take one away from
-- an issuance. Returns whether the code moved; the caller reads the row to
-- tell why not.
CREATE FUNCTION loyalty.advance_code(p_tenant_id uuid, p_id uuid, p_to text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
BEGIN
    -- One UPDATE per move, not a CASE around now(): Citus refuses a
    -- function that is not immutable inside a CASE of an UPDATE.
    IF p_to = 'issued' THEN
        UPDATE public.voucher_codes SET status = 'issued', issued_at = now()
         WHERE tenant_id = t AND id = p_id AND status = 'reserved';
        -- Delivering again (an outbox worker's retry) is a replay.
        RETURN FOUND OR EXISTS (SELECT 1 FROM public.voucher_codes
                                 WHERE tenant_id = t AND id = p_id AND status = 'issued');
    ELSIF p_to = 'invalid' THEN
        UPDATE public.voucher_codes SET status = 'invalid'
         WHERE tenant_id = t AND id = p_id AND status = 'available';
    ELSE
        RETURN false;
    END IF;
    RETURN FOUND;
END
$$;
