DROP TABLE rules;
DROP TABLE campaigns;
DROP TABLE ledger_entries;
DROP TABLE budgets;
DROP TABLE reward_catalog;
