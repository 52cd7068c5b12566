-- Holds: an issuance made for a checkout is 'reserved' until the payment
-- completes (confirmed: 'issued') or fails (voided: 'cancelled'); one not
-- settled by hold_expires_at is released by the next expiry sweep.
ALTER TABLE issuances ADD COLUMN hold_expires_at timestamptz;
ALTER TABLE issuances ADD CONSTRAINT issuances_held_until_a_time
    CHECK (status <> 'reserved' OR hold_expires_at IS NOT NULL);
CREATE INDEX issuances_hold_expires_idx ON issuances (tenant_id, hold_expires_at)
    WHERE status = 'reserved';

-- Reversals: a redemption undone (a refund, a mistaken scan) puts the
-- issuance back to 'issued' and its cost back from spent to reserved, booked
-- as a 'reversal' entry. Once per issuance. The issuance's reservation is
-- then open again, and is settled a second time (redeemed, released):
-- those second entries are marked `reopened`, so each settlement of each
-- opening is still booked at most once.
ALTER TABLE issuances ADD COLUMN reversed_at timestamptz;

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_entry_type_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_entry_type_check
    CHECK (entry_type IN ('reserve', 'release', 'commit', 'topup', 'reversal'));
ALTER TABLE ledger_entries ADD COLUMN reopened boolean NOT NULL DEFAULT false;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_reopened_settles_an_issuance
    CHECK (NOT reopened OR (entry_type IN ('release', 'commit') AND ref_type = 'issuance'));
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_once_per_ref;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_once_per_ref
    UNIQUE (tenant_id, entry_type, ref_type, ref_id, reopened);
DROP INDEX ledger_entries_settled_once;
CREATE UNIQUE INDEX ledger_entries_settled_once ON ledger_entries (tenant_id, ref_type, ref_id, reopened)
    WHERE entry_type IN ('release', 'commit');
