-- What a single issuance does inside COMMIT. The budget row is shared by
-- every issuance of a campaign, and a limited rule's counter by every
-- issuance of the rule; locked inside issue_reward, either row would stay
-- locked while the answer travels to the client and COMMIT travels back, and
-- concurrent issuances would queue behind that round trip. A deferred
-- constraint trigger on the issuance's reserve entry takes both locks inside
-- COMMIT instead: first the rule's count (rules before budgets is the order
-- every path takes), then the budget's reservation. Both still bind: COMMIT
-- fails with limit_reached or budget_exhausted if either is used up by then.
--
-- A batch reserves its whole cost in one update and marks its entries with
-- its batch_id, which is how this trigger knows to skip them: the signal is
-- on the batch's own rows, not in a setting another statement could set.
CREATE FUNCTION loyalty.settle_issuance_at_commit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    limited_rule uuid;
BEGIN
    -- Issuances hold the rule's lock shared until commit, so a limit cannot
    -- be added between this read and the update.
    SELECT ru.id INTO limited_rule
      FROM public.issuances i
      JOIN public.rules ru ON ru.tenant_id = i.tenant_id AND ru.id = i.rule_id
     WHERE i.tenant_id = NEW.tenant_id AND i.id = NEW.ref_id AND ru.global_limit IS NOT NULL;
    IF limited_rule IS NOT NULL THEN
        UPDATE public.rules SET issued_count = issued_count + 1
         WHERE tenant_id = NEW.tenant_id AND id = limited_rule
           AND global_limit IS NOT NULL AND issued_count < global_limit;
        IF NOT FOUND AND EXISTS (SELECT 1 FROM public.rules
                                  WHERE tenant_id = NEW.tenant_id AND id = limited_rule
                                    AND global_limit IS NOT NULL) THEN
            PERFORM loyalty.refuse('limit_reached',
                format('rule %s reached its global limit', limited_rule), '{"scope": "global"}');
        END IF;
    END IF;
    UPDATE public.budgets SET reserved = reserved + NEW.amount
     WHERE tenant_id = NEW.tenant_id AND id = NEW.budget_id
       AND reserved + spent + NEW.amount <= hard_cap;
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('budget_exhausted', format('budget %s is exhausted', NEW.budget_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_entries_settle_at_commit
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.entry_type = 'reserve' AND NEW.ref_type = 'issuance' AND NEW.batch_id IS NULL)
    EXECUTE FUNCTION loyalty.settle_issuance_at_commit();

-- Applies this transaction's pending commit-time work now. Anything that
-- moves reserved money down (redeem, release, cancel, expire) calls it first,
-- so an issuance can be settled in the transaction that issued it.
CREATE FUNCTION loyalty.settle_pending_reservations() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- ALL, not the trigger's name: on Citus the shards' copies of the
    -- trigger carry a shard suffix, and only ALL reaches them. The schema's
    -- other deferred check, a code's issuance, holds by the time anything
    -- moves reserved money down.
    SET CONSTRAINTS ALL IMMEDIATE;
    SET CONSTRAINTS ALL DEFERRED;
END
$$;

-- A limit added to a rule starts from what the rule has issued so far, its
-- own transaction's pending issuances included: they are settled first,
-- while the rule has no limit, so none is counted twice.
CREATE FUNCTION loyalty.recount_rule_issuances() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- Wait for issuances in flight, which read the rule before this change.
    PERFORM pg_advisory_xact_lock(loyalty.rule_lock(NEW.id));
    PERFORM loyalty.settle_pending_reservations();
    NEW.issued_count := (SELECT count(*) FROM public.issuances
                          WHERE tenant_id = NEW.tenant_id AND rule_id = NEW.id
                            AND status <> 'cancelled');
    RETURN NEW;
END
$$;

CREATE TRIGGER rules_recount_on_new_limit
    BEFORE UPDATE OF global_limit ON rules
    FOR EACH ROW WHEN (OLD.global_limit IS NULL AND NEW.global_limit IS NOT NULL)
    EXECUTE FUNCTION loyalty.recount_rule_issuances();

-- settle_pending_reservations() for a guard's tenant, as a money function
-- (SECURITY DEFINER, the tenant first), so that on Citus it is delegated to
-- the worker where the deferred triggers wait: there a SET CONSTRAINTS sent
-- to the coordinator never reaches them. A guard on Citus runs it just
-- before COMMIT, which turns a refusal at commit into a typed one.
CREATE FUNCTION loyalty.settle_now(p_tenant_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
BEGIN
    PERFORM loyalty.tenant_argument(p_tenant_id);
    PERFORM loyalty.settle_pending_reservations();
END
$$;
