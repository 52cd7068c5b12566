DROP INDEX customers_phone_prefix_idx;
DROP INDEX customers_created_idx;
ALTER TABLE customers DROP CONSTRAINT customers_erasure_is_whole;
ALTER TABLE customers DROP COLUMN erased_at;
ALTER TABLE customers ALTER COLUMN phone_e164 SET NOT NULL;
