CREATE UNIQUE INDEX rules_tenant_id_campaign_reward_key
    ON rules (tenant_id, id, campaign_id, reward_id);

CREATE TABLE issuances (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    campaign_id      uuid NOT NULL,
    rule_id          uuid NOT NULL,
    customer_id      uuid NOT NULL,
    reward_id        uuid NOT NULL,
    -- The campaign's budget at the time of issue: release and commit hit
    -- that same budget even if the campaign moves to another.
    budget_id        uuid NOT NULL,
    voucher_code_id  uuid,
    status           text NOT NULL CHECK (status IN ('reserved', 'issued', 'redeemed', 'expired', 'cancelled')),
    cost_amount      numeric(18, 2) NOT NULL CHECK (cost_amount > 0),
    currency         text NOT NULL CHECK (is_iso4217(currency)),
    idempotency_key  text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    issued_at        timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz,
    redeemed_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT issuances_tenant_idempotency_key UNIQUE (tenant_id, idempotency_key),
    -- One check instead of three per row, and it proves the issuance's
    -- campaign and reward are its rule's.
    CONSTRAINT issuances_rule_fkey FOREIGN KEY (tenant_id, rule_id, campaign_id, reward_id)
        REFERENCES rules (tenant_id, id, campaign_id, reward_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id),
    FOREIGN KEY (tenant_id, budget_id) REFERENCES budgets (tenant_id, id),
    CONSTRAINT issuances_redeemed_at_matches_status CHECK ((status = 'redeemed') = (redeemed_at IS NOT NULL)),
    CONSTRAINT issuances_expiry_order CHECK (expires_at > issued_at)
);
-- Only issuances with an expiry can be swept by expire_issuances.
CREATE INDEX issuances_status_expires_idx ON issuances (tenant_id, status, expires_at)
    WHERE status IN ('issued', 'reserved') AND expires_at IS NOT NULL;
-- Per-customer limits count a customer's issuances of a rule that are not
-- cancelled; with the status in the predicate the count reads the index alone.
CREATE INDEX issuances_rule_customer_idx ON issuances (tenant_id, rule_id, customer_id)
    WHERE status <> 'cancelled';
CREATE INDEX issuances_customer_issued_idx ON issuances (tenant_id, customer_id, issued_at DESC, id);
CREATE INDEX issuances_issued_idx ON issuances (tenant_id, issued_at DESC, id);
CREATE INDEX issuances_reward_idx ON issuances (tenant_id, reward_id, issued_at);
SELECT isolate_by_tenant('issuances');
-- Issuances are written by the SQL layer's functions alone.
GRANT SELECT ON issuances TO loyalty_app;

CREATE TABLE voucher_codes (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    reward_id    uuid NOT NULL,
    code         text NOT NULL CHECK (char_length(code) BETWEEN 1 AND 100),
    status       text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'reserved', 'issued', 'invalid')),
    issuance_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    issued_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT voucher_codes_tenant_reward_code_key UNIQUE (tenant_id, reward_id, code),
    FOREIGN KEY (tenant_id, reward_id) REFERENCES reward_catalog (tenant_id, id),
    -- Deferred: a code is claimed for an issuance before that row is inserted,
    -- in the same transaction.
    FOREIGN KEY (tenant_id, issuance_id) REFERENCES issuances (tenant_id, id)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT voucher_codes_claimed_has_issuance
        CHECK ((status IN ('reserved', 'issued')) = (issuance_id IS NOT NULL))
);
CREATE INDEX voucher_codes_available_idx ON voucher_codes (tenant_id, reward_id)
    WHERE status = 'available';
CREATE INDEX voucher_codes_issuance_idx ON voucher_codes (tenant_id, issuance_id)
    WHERE issuance_id IS NOT NULL;
SELECT isolate_by_tenant('voucher_codes');
-- Codes are imported here; their statuses move through the SQL layer alone.
GRANT SELECT, INSERT (tenant_id, id, reward_id, code) ON voucher_codes TO loyalty_app;

ALTER TABLE issuances
    ADD CONSTRAINT issuances_voucher_code_fkey
    FOREIGN KEY (tenant_id, voucher_code_id) REFERENCES voucher_codes (tenant_id, id);
CREATE UNIQUE INDEX issuances_voucher_code_key ON issuances (tenant_id, voucher_code_id)
    WHERE voucher_code_id IS NOT NULL;
