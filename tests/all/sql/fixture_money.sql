-- The money rows of the fixture, for the tenant in `fixture.tenant`, written
-- as the table owner: an issuance (a hold) holding the tenant's code, and its reserve
-- ledger entry, which reserves its 5 on the budget at commit.
DO $$
DECLARE
    t uuid := current_setting('fixture.tenant')::uuid;
    issuance uuid := gen_random_uuid();
    held_code uuid := (SELECT id FROM voucher_codes WHERE tenant_id = t);
BEGIN
    UPDATE budgets SET hard_cap = 1000 WHERE tenant_id = t;
    INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
        SELECT t, id, 'reserve', 5, 'USD', 'issuance', issuance FROM budgets WHERE tenant_id = t;
    INSERT INTO issuances (tenant_id, id, campaign_id, rule_id, customer_id, reward_id, budget_id,
                           voucher_code_id, status, cost_amount, currency, idempotency_key,
                           hold_expires_at)
        SELECT t, issuance, r.campaign_id, r.id, c.id, r.reward_id, b.id, held_code, 'reserved', 5, 'USD',
               'key-' || left(t::text, 8), now() + interval '1 hour'
          FROM rules r, customers c, budgets b
         WHERE r.tenant_id = t AND c.tenant_id = t AND b.tenant_id = t;
    UPDATE voucher_codes SET status = 'reserved', issuance_id = issuance WHERE id = held_code;
END
$$;
