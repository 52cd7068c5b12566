DROP INDEX voucher_codes_reward_idx;
ALTER TABLE voucher_codes DROP CONSTRAINT voucher_codes_tenant_code_key;
ALTER TABLE voucher_codes ADD CONSTRAINT voucher_codes_tenant_reward_code_key UNIQUE (tenant_id, reward_id, code);
