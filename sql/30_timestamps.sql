-- created_at never changes; updated_at is the time of the last edit.
CREATE FUNCTION loyalty.set_timestamps() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.created_at := OLD.created_at;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['tenants', 'staff_users', 'customers', 'reward_catalog', 'budgets',
                               'campaigns', 'issuances', 'voucher_codes', 'wa_sessions'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION loyalty.set_timestamps()',
                       tbl || '_set_timestamps', tbl);
    END LOOP;
END
$$;

-- Counting issuances is not an edit of the rule.
CREATE TRIGGER rules_set_timestamps
    BEFORE UPDATE OF campaign_id, name, event_type, conditions, reward_id,
                     per_customer_limit, global_limit, active
    ON rules FOR EACH ROW EXECUTE FUNCTION loyalty.set_timestamps();
