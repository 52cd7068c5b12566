DROP INDEX ledger_entries_settled_once;
CREATE UNIQUE INDEX ledger_entries_settled_once ON ledger_entries (tenant_id, ref_type, ref_id)
    WHERE entry_type IN ('release', 'commit');
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_once_per_ref;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_once_per_ref
    UNIQUE (tenant_id, entry_type, ref_type, ref_id);
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_reopened_settles_an_issuance;
ALTER TABLE ledger_entries DROP COLUMN reopened;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_entry_type_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_entry_type_check
    CHECK (entry_type IN ('reserve', 'release', 'commit', 'topup'));

ALTER TABLE issuances DROP COLUMN reversed_at;
DROP INDEX issuances_hold_expires_idx;
ALTER TABLE issuances DROP CONSTRAINT issuances_held_until_a_time;
ALTER TABLE issuances DROP COLUMN hold_expires_at;
