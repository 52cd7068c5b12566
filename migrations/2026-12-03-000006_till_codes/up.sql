-- A till scans a code and nothing else, so a code names one voucher in its
-- tenant: unique per tenant, no longer per reward.
ALTER TABLE voucher_codes DROP CONSTRAINT voucher_codes_tenant_reward_code_key;
ALTER TABLE voucher_codes ADD CONSTRAINT voucher_codes_tenant_code_key UNIQUE (tenant_id, code);
CREATE INDEX voucher_codes_reward_idx ON voucher_codes (tenant_id, reward_id, status);
