-- Every reason the crate's SQL refuses work for, as one type. The Rust side
-- has one variant of `Refusal` per label (src/refusal.rs); a test compares
-- the two lists, and another reads these functions' source from pg_proc to
-- check that every label is raised somewhere and nothing else is.
CREATE TYPE loyalty.refusal AS ENUM (
    'unknown_tenant',
    'tenant_suspended',
    'rule_not_found',
    'customer_not_found',
    'issuance_not_found',
    'budget_not_found',
    'rule_inactive',
    'campaign_not_running',
    'reward_archived',
    'campaign_without_budget',
    'currency_mismatch',
    'customer_inactive',
    'budget_exhausted',
    'limit_reached',
    'no_codes_available',
    'idempotency_conflict',
    'issuance_not_issued',
    'issuance_expired',
    'not_reserved',
    'reference_reused',
    'already_settled',
    'code_not_found',
    'already_redeemed',
    'hold_expired',
    'not_redeemed',
    'already_reversed',
    'reversal_window_closed',
    'invalid_argument'
);

-- A refusal as data: {"refusal": <label>, ...what the caller needs to act}.
-- The label goes through the enum, so a misspelt one fails loudly.
CREATE FUNCTION loyalty.refusal_json(reason loyalty.refusal, data jsonb DEFAULT '{}') RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT jsonb_build_object('refusal', reason) || data $$;

-- Raises a refusal: SQLSTATE LY000 (class LY, "loyalty refusal"), a message
-- for people, and the refusal as JSON in DETAIL for programs. DETAIL, unlike
-- the constraint name, survives Citus forwarding a worker's error.
CREATE FUNCTION loyalty.refuse(reason loyalty.refusal, message text, data jsonb DEFAULT '{}')
RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'LY000', MESSAGE = message,
        DETAIL = loyalty.refusal_json(reason, data)::text;
END
$$;
