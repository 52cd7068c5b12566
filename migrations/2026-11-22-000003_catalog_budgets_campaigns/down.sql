DROP FUNCTION reserve_budget(uuid, uuid, numeric, text, uuid);
DROP FUNCTION check_budget_capacity(uuid, numeric);
DROP TABLE rules;
DROP TABLE campaigns;
DROP TABLE ledger_entries;
DROP TABLE budgets;
DROP TABLE reward_catalog;
