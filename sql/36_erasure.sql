-- Erasure is final: an erased customer's row keeps no personal data and
-- cannot be given any back, whoever sends the UPDATE (a guard's own SQL
-- included; loyalty_app may update customers). The row is read as JSON so
-- the trigger names no column a migration may later drop.
CREATE FUNCTION loyalty.refuse_unerasing() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    before jsonb := to_jsonb(OLD);
    after jsonb := to_jsonb(NEW);
BEGIN
    IF (after -> 'status', after -> 'phone_e164', after -> 'attributes', after -> 'erased_at')
       IS DISTINCT FROM
       (before -> 'status', before -> 'phone_e164', before -> 'attributes', before -> 'erased_at') THEN
        PERFORM loyalty.refuse('invalid_argument', format('customer %s is erased', OLD.id),
            jsonb_build_object('argument', 'customer', 'reason', 'erased customers cannot change'));
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER customers_stay_erased BEFORE UPDATE ON customers FOR EACH ROW
    WHEN (OLD.status = 'erased')
    EXECUTE FUNCTION loyalty.refuse_unerasing();
