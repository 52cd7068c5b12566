ALTER TABLE issuances DROP CONSTRAINT issuances_voucher_code_fkey;
DROP TABLE voucher_codes;
DROP TABLE issuances;
DROP INDEX rules_tenant_id_campaign_reward_key;
