DROP FUNCTION expire_issuances(timestamptz, integer);
DROP FUNCTION cancel_issuance(uuid);
DROP FUNCTION end_issuances(uuid[], text);
DROP FUNCTION redeem_issuance(uuid);
DROP FUNCTION issue_reward_batch(uuid, uuid[], text[], uuid[], timestamptz);
DROP FUNCTION batch_answer(boolean, jsonb);
DROP FUNCTION issue_reward(uuid, uuid, uuid, text, timestamptz);
DROP FUNCTION replayed_issuance(text, uuid, uuid);
DROP FUNCTION rule_lock(uuid);
DROP FUNCTION customer_limit_lock(uuid, uuid);
DROP FUNCTION issuance_context(uuid);
DROP FUNCTION issuance_json(uuid, boolean);

CREATE OR REPLACE FUNCTION reserve_budget(
    p_tenant_id uuid,
    p_budget_id uuid,
    p_amount numeric,
    p_currency text,
    p_ref_id uuid
) RETURNS boolean
    LANGUAGE sql
    AS $$
    WITH taken AS (
        UPDATE budgets
           SET reserved = reserved + p_amount
         WHERE tenant_id = p_tenant_id
           AND id = p_budget_id
           AND currency = p_currency
           AND p_amount > 0
           AND reserved + spent + p_amount <= hard_cap
        RETURNING tenant_id, id, currency
    ), booked AS (
        INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
        SELECT tenant_id, id, 'reserve', p_amount, currency, 'issuance', p_ref_id FROM taken
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM booked)
$$;

DROP FUNCTION move_budget(uuid, text, numeric, text, uuid);
DROP FUNCTION loyalty_refuse(text, text);
DROP INDEX ledger_entries_settled_once;
DROP INDEX voucher_codes_issuance_idx;
ALTER TABLE rules RESET (fillfactor);
ALTER TABLE budgets RESET (fillfactor);
DROP TRIGGER rules_recount_on_new_limit ON rules;
DROP FUNCTION recount_rule_issuances();
DROP TRIGGER rules_set_timestamps ON rules;
CREATE TRIGGER rules_set_timestamps BEFORE UPDATE ON rules
    FOR EACH ROW EXECUTE FUNCTION set_timestamps();
ALTER TABLE rules DROP COLUMN issued_count;
ALTER TABLE issuances DROP CONSTRAINT issuances_tenant_id_budget_id_fkey;
ALTER TABLE issuances DROP COLUMN budget_id;
