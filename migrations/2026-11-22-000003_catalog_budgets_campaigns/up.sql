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
SELECT isolate_by_tenant('reward_catalog');
GRANT SELECT, INSERT, UPDATE ON reward_catalog TO loyalty_app;

CREATE TABLE budgets (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    currency    text NOT NULL CHECK (is_iso4217(currency)),
    hard_cap    numeric(18, 2) NOT NULL DEFAULT 0 CHECK (hard_cap >= 0),
    reserved    numeric(18, 2) NOT NULL DEFAULT 0,
    spent       numeric(18, 2) NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- Lets ledger entries prove by foreign key that they use the budget's currency.
    CONSTRAINT budgets_tenant_id_currency_key UNIQUE (tenant_id, id, currency),
    CONSTRAINT budgets_within_cap CHECK (reserved >= 0 AND spent >= 0 AND reserved + spent <= hard_cap)
)
-- Every issuance updates its budget: room on the page keeps those updates
-- HOT and their dead versions quick to prune.
WITH (fillfactor = 10);
SELECT isolate_by_tenant('budgets');
-- Money moves only through the SQL layer's functions: loyalty_app may name a
-- budget, never set its figures.
GRANT SELECT, INSERT (tenant_id, id, name, currency), UPDATE (name) ON budgets TO loyalty_app;

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
    -- Set on the reserve entries of one batch issuance, which reserved their
    -- whole cost at once: the commit-time reservation skips them.
    batch_id    uuid,
    -- The wall clock, not the transaction start, so entries of one
    -- transaction keep the order they were booked in.
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, budget_id, currency) REFERENCES budgets (tenant_id, id, currency),
    -- A retried money movement cannot be booked twice.
    CONSTRAINT ledger_entries_once_per_ref UNIQUE (tenant_id, entry_type, ref_type, ref_id),
    CONSTRAINT ledger_entries_batch_marks_issuance_reserve
        CHECK (batch_id IS NULL OR (entry_type = 'reserve' AND ref_type = 'issuance'))
);
-- A reservation ends once: released or committed, never both.
CREATE UNIQUE INDEX ledger_entries_settled_once ON ledger_entries (tenant_id, ref_type, ref_id)
    WHERE entry_type IN ('release', 'commit');
CREATE INDEX ledger_entries_budget_idx ON ledger_entries (tenant_id, budget_id, created_at);
SELECT isolate_by_tenant('ledger_entries');
GRANT SELECT ON ledger_entries TO loyalty_app;

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
    -- Issuances of the rule that are not cancelled, kept only while the rule
    -- has a global limit, so that limit is one conditional UPDATE instead of
    -- a count. Rules without a limit skip it: the row would otherwise be a
    -- second hot spot next to the budget on every issuance.
    issued_count        integer NOT NULL DEFAULT 0 CHECK (issued_count >= 0),
    active              boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id),
    FOREIGN KEY (tenant_id, reward_id) REFERENCES reward_catalog (tenant_id, id)
)
WITH (fillfactor = 10);
CREATE INDEX rules_campaign_active_idx ON rules (tenant_id, campaign_id) WHERE active;
CREATE INDEX rules_tenant_event_active_idx ON rules (tenant_id, event_type, active);
CREATE INDEX rules_reward_idx ON rules (tenant_id, reward_id);
SELECT isolate_by_tenant('rules');
-- issued_count is kept by the SQL layer alone.
GRANT SELECT, DELETE,
      INSERT (tenant_id, id, campaign_id, name, event_type, conditions, reward_id,
              per_customer_limit, global_limit, active),
      UPDATE (campaign_id, name, event_type, conditions, reward_id, per_customer_limit,
              global_limit, active)
   ON rules TO loyalty_app;
