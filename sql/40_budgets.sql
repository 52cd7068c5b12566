-- Budget movements outside issuances: top-ups, and reservations a service
-- books against its own references (orders, manual grants).

-- Advisory only: a true answer reserves nothing. Use reserve_budget to take
-- capacity.
CREATE FUNCTION loyalty.check_budget_capacity(p_tenant_id uuid, p_budget_id uuid, p_amount numeric)
RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    RETURN coalesce(
        (SELECT reserved + spent + p_amount <= hard_cap
           FROM public.budgets
          WHERE tenant_id = p_tenant_id AND id = p_budget_id),
        false);
END
$$;

-- One budget movement with its ledger entry. The row lock comes first, so
-- the checks that follow see every earlier movement of this budget. A
-- refusal comes back as data (the transaction goes on), not as an error;
-- replayed is true when the same entry type, reference and amount were booked
-- before, and then nothing changed.
CREATE FUNCTION loyalty.move_budget(
    p_tenant_id uuid,
    p_budget_id uuid,
    p_entry_type text,
    p_amount numeric,
    p_ref_type text,
    p_ref_id uuid
) RETURNS TABLE (refusal jsonb, replayed boolean, hard_cap numeric, reserved numeric, spent numeric)
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    b public.budgets%ROWTYPE;
    booked numeric;
    booked_on uuid;
    refused jsonb;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM loyalty.refuse('invalid_argument', 'amount must be positive',
            jsonb_build_object('argument', 'amount', 'reason', 'must be positive'));
    END IF;
    IF p_entry_type IS NULL OR p_entry_type NOT IN ('reserve', 'release', 'commit', 'topup') THEN
        PERFORM loyalty.refuse('invalid_argument', format('unknown entry type %s', p_entry_type),
            jsonb_build_object('argument', 'entry_type', 'reason', 'unknown entry type'));
    END IF;
    IF p_ref_type = 'issuance' THEN
        -- Issuances book and settle their own entries; a direct movement
        -- would leave an issued reward without its reservation.
        PERFORM loyalty.refuse('invalid_argument', 'ref_type issuance is booked only by issuances',
            jsonb_build_object('argument', 'ref_type', 'reason', 'booked only by issuances'));
    END IF;
    PERFORM loyalty.settle_pending_reservations();
    SELECT * INTO b FROM public.budgets WHERE tenant_id = t AND id = p_budget_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT loyalty.refusal_json('budget_not_found'), false,
                            NULL::numeric, NULL::numeric, NULL::numeric;
        RETURN;
    END IF;
    SELECT amount, budget_id INTO booked, booked_on FROM public.ledger_entries
     WHERE tenant_id = t AND entry_type = p_entry_type AND ref_type = p_ref_type AND ref_id = p_ref_id;
    IF FOUND THEN
        IF booked <> p_amount OR booked_on <> p_budget_id THEN
            refused := loyalty.refusal_json('reference_reused');
        END IF;
        RETURN QUERY SELECT refused, refused IS NULL, b.hard_cap, b.reserved, b.spent;
        RETURN;
    END IF;
    IF p_entry_type IN ('release', 'commit') THEN
        IF NOT EXISTS (SELECT 1 FROM public.ledger_entries
                        WHERE tenant_id = t AND budget_id = p_budget_id AND entry_type = 'reserve'
                          AND ref_type = p_ref_type AND ref_id = p_ref_id AND amount = p_amount) THEN
            refused := loyalty.refusal_json('not_reserved');
        ELSIF EXISTS (SELECT 1 FROM public.ledger_entries
                       WHERE tenant_id = t AND entry_type IN ('release', 'commit')
                         AND ref_type = p_ref_type AND ref_id = p_ref_id) THEN
            refused := loyalty.refusal_json('already_settled');
        END IF;
    ELSIF p_entry_type = 'reserve' AND b.reserved + b.spent + p_amount > b.hard_cap THEN
        refused := loyalty.refusal_json('budget_exhausted');
    END IF;
    IF refused IS NOT NULL THEN
        RETURN QUERY SELECT refused, false, b.hard_cap, b.reserved, b.spent;
        RETURN;
    END IF;
    UPDATE public.budgets SET
        -- Searched, not simple, CASEs: Citus deparses a simple CASE on a
        -- parameter into text = boolean.
        reserved = reserved + CASE WHEN p_entry_type = 'reserve' THEN p_amount
                                   WHEN p_entry_type = 'topup' THEN 0 ELSE -p_amount END,
        spent = spent + CASE WHEN p_entry_type = 'commit' THEN p_amount ELSE 0 END,
        hard_cap = hard_cap + CASE WHEN p_entry_type = 'topup' THEN p_amount ELSE 0 END
    WHERE tenant_id = t AND id = p_budget_id
    RETURNING * INTO b;
    INSERT INTO public.ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    VALUES (t, p_budget_id, p_entry_type, p_amount, b.currency, p_ref_type, p_ref_id);
    RETURN QUERY SELECT NULL::jsonb, false, b.hard_cap, b.reserved, b.spent;
END
$$;

-- A reservation under ref_type 'reserve_budget', for SQL callers: true when
-- the amount is reserved (now or by an earlier call with the same ref),
-- false when the budget cannot cover it. One conditional movement, so
-- concurrent callers cannot overspend. A money function like the others
-- (SECURITY DEFINER, the tenant first), so on Citus it is delegated whole.
CREATE FUNCTION loyalty.reserve_budget(
    p_tenant_id uuid,
    p_budget_id uuid,
    p_amount numeric,
    p_currency text,
    p_ref_id uuid
) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    moved record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.budgets
                    WHERE tenant_id = t AND id = p_budget_id AND currency = p_currency) THEN
        RETURN false;
    END IF;
    SELECT * INTO moved FROM loyalty.move_budget(t, p_budget_id, 'reserve', p_amount,
                                                 'reserve_budget', p_ref_id);
    RETURN moved.refusal IS NULL;
END
$$;
