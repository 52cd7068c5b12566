-- Erasure removes a customer's personal data and keeps the row, which the
-- money history (issuances, ledger) still points to. An erased customer has
-- no phone number, so it can no longer be found by one, and erasure is
-- final: the row cannot be given a phone or a live status again.
ALTER TABLE customers ALTER COLUMN phone_e164 DROP NOT NULL;
ALTER TABLE customers ADD COLUMN erased_at timestamptz;
ALTER TABLE customers ADD CONSTRAINT customers_erasure_is_whole
    CHECK ((status = 'erased') = (phone_e164 IS NULL)
       AND (status = 'erased') = (erased_at IS NOT NULL));
-- The keyset list of customers, newest first.
CREATE INDEX customers_created_idx ON customers (tenant_id, created_at DESC, id);
-- Search by the start of a phone number: byte order, whatever the
-- database's collation, so a prefix is a range.
CREATE INDEX customers_phone_prefix_idx ON customers (tenant_id, (phone_e164 COLLATE "C"));
