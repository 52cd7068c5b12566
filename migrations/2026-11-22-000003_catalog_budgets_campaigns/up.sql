CREATE TABLE reward_catalog (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description  text CHECK (char_length(description) <= 2000),
    type         text NOT NULL CHECK (type IN ('voucher', 'discount', 'cashback', 'points', 'physical')),
    cost_amount  numeric(18, 2) NOT NULL CHECK (cost_amount > 0),
    currency     text NOT NULL CHECK (is_iso4217(currency)),
    uses_codes   boolean NOT NULL DEFAULT false,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE TRIGGER reward_catalog_set_timestamps BEFORE UPDATE ON reward_catalog
    FOR EACH ROW EXECUTE FUNCTION set_timestamps();
SELECT isolate_by_tenant('reward_catalog');
GRANT SELECT, INSERT, UPDATE ON reward_catalog TO loyalty_app;

CREATE TABLE budgets (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    currency    text NOT NULL CHECK (is_iso4217(currency)),
    hard_cap    numeric(18, 2) NOT NULL CHECK (hard_cap >= 0),
    reserved    numeric(18, 2) NOT NULL DEFAULT 0,
    spent       numeric(18, 2) NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- Lets ledger entries prove by foreign key that they use the budget's currency.
    CONSTRAINT budgets_tenant_id_currency_key UNIQUE (tenant_id, id, currency),
    CONSTRAINT budgets_within_cap CHECK (reserved >= 0 AND spent >= 0 AND reserved + spent <= hard_cap)
);
CREATE TRIGGER budgets_set_timestamps BEFORE UPDATE ON budgets
    FOR EACH ROW EXECUTE FUNCTION set_timestamps();
SELECT isolate_by_tenant('budgets');
GRANT SELECT, INSERT, UPDATE ON budgets TO loyalty_app;

-- Append-only. For every budget, reserved and spent equal what its entries sum to.
CREATE TABLE ledger_entries (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    budget_id   uuid NOT NULL,
    entry_type  text NOT NULL CHECK (entry_type IN ('reserve', 'release', 'commit', 'topup')),
    amount      numeric(18, 2) NOT NULL CHECK (amount > 0),
    currency    text NOT NULL,
    ref_type    text NOT NULL CHECK (char_length(ref_type) BETWEEN 1 AND 50),
    ref_id      uuid NOT NULL,
    -- The wall clock, not the transaction start, so entries of one
    -- transaction keep the order they were booked in.
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, budget_id, currency) REFERENCES budgets (tenant_id, id, currency),
    -- A retried money movement cannot be booked twice.
    CONSTRAINT ledger_entries_once_per_ref UNIQUE (tenant_id, entry_type, ref_type, ref_id)
);
CREATE INDEX ledger_entries_budget_idx ON ledger_entries (tenant_id, budget_id, created_at);
SELECT isolate_by_tenant('ledger_entries');
GRANT SELECT, INSERT ON ledger_entries TO loyalty_app;

CREATE TABLE campaigns (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description  text CHECK (char_length(description) <= 2000),
    start_at     timestamptz,
    end_at       timestamptz,
    budget_id    uuid,
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'paused', 'ended')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets (tenant_id, id),
    CONSTRAINT campaigns_window_order CHECK (end_at > start_at)
);
CREATE INDEX campaigns_status_idx ON campaigns (tenant_id, status, created_at DESC);
CREATE INDEX campaigns_budget_idx ON campaigns (tenant_id, budget_id) WHERE budget_id IS NOT NULL;
CREATE TRIGGER campaigns_set_timestamps BEFORE UPDATE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION set_timestamps();
SELECT isolate_by_tenant('campaigns');
GRANT SELECT, INSERT, UPDATE, DELETE ON campaigns TO loyalty_app;

CREATE TABLE rules (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    campaign_id         uuid NOT NULL,
    name                text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    event_type          text NOT NULL CHECK (char_length(event_type) BETWEEN 1 AND 100),
    conditions          jsonb NOT NULL DEFAULT '{}' CHECK (is_json_object(conditions)),
    reward_id           uuid NOT NULL,
    per_customer_limit  integer CHECK (per_customer_limit > 0),
    global_limit        integer CHECK (global_limit > 0),
    active              boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id),
    FOREIGN KEY (tenant_id, reward_id) REFERENCES reward_catalog (tenant_id, id)
);
CREATE INDEX rules_campaign_active_idx ON rules (tenant_id, campaign_id) WHERE active;
CREATE INDEX rules_tenant_event_active_idx ON rules (tenant_id, event_type, active);
CREATE INDEX rules_reward_idx ON rules (tenant_id, reward_id);
CREATE TRIGGER rules_set_timestamps BEFORE UPDATE ON rules
    FOR EACH ROW EXECUTE FUNCTION set_timestamps();
SELECT isolate_by_tenant('rules');
GRANT SELECT, INSERT, UPDATE, DELETE ON rules TO loyalty_app;

-- The seed's function names, kept for SQL callers. This one is advisory only:
-- a true answer reserves nothing. Use reserve_budget to take capacity.
CREATE FUNCTION check_budget_capacity(p_budget_id uuid, p_amount numeric) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(
        (SELECT reserved + spent + p_amount <= hard_cap
           FROM budgets
          WHERE tenant_id = current_tenant_id() AND id = p_budget_id),
        false)
$$;

-- One conditional UPDATE: the row lock and the capacity test happen together,
-- so concurrent callers can never take more than hard_cap between them.
CREATE FUNCTION reserve_budget(
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
