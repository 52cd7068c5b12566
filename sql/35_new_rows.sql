-- What a row a service inserts must start as: no money on a new budget, no
-- count on a new rule, and a new voucher code available to nobody yet. The
-- column grants already keep loyalty_app from naming those columns; on
-- Citus they cannot (the coordinator fills in every default and sends the
-- workers an INSERT that names every column, so Store::distribute grants
-- INSERT on the whole table), and these triggers hold the line there, and
-- on plain PostgreSQL for the owner too.
CREATE FUNCTION loyalty.refuse_funded_row() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    fresh jsonb := to_jsonb(NEW);
    starts jsonb := TG_ARGV[0]::jsonb;
    field text;
BEGIN
    FOR field IN SELECT jsonb_object_keys(starts) LOOP
        IF fresh -> field IS DISTINCT FROM starts -> field THEN
            PERFORM loyalty.refuse('invalid_argument',
                format('a new %s row must start with %s = %s', TG_TABLE_NAME, field, starts -> field),
                jsonb_build_object('argument', field, 'reason', 'set by the money functions only'));
        END IF;
    END LOOP;
    RETURN NEW;
END
$$;

CREATE TRIGGER budgets_start_empty BEFORE INSERT ON budgets FOR EACH ROW
    EXECUTE FUNCTION loyalty.refuse_funded_row('{"hard_cap": 0, "reserved": 0, "spent": 0}');
CREATE TRIGGER rules_start_uncounted BEFORE INSERT ON rules FOR EACH ROW
    EXECUTE FUNCTION loyalty.refuse_funded_row('{"issued_count": 0}');
CREATE TRIGGER voucher_codes_start_available BEFORE INSERT ON voucher_codes FOR EACH ROW
    EXECUTE FUNCTION loyalty.refuse_funded_row(
        '{"status": "available", "issuance_id": null, "issued_at": null}');
