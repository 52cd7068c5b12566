-- plpgsql caches each statement's plan, and after five calls in a session it
-- may keep a generic plan, made without the arguments' values. Such a plan
-- guesses ten rows for any unnest of an argument array, and nesting a join of
-- two derived tables on that guess makes the statement quadratic in the batch:
-- measured, a 1,000-recipient batch went from 4 ms to 100 ms in one statement
-- once a pooled connection had run it five times. Recipients are therefore
-- matched to their index entries by lateral probes and to each other by
-- position in arrays, never by joining two derived tables, so every plan the
-- planner can pick is linear in the batch.
--
-- One reward for many customers, all or nothing. Per-customer refusals
-- (unknown or inactive customer, limit reached) are reported without writing
-- anything: {"applied": false, "items": [...]}. Batch-wide ones (codes,
-- global limit, budget) raise.
CREATE OR REPLACE FUNCTION issue_reward_batch(
    p_rule_id uuid,
    p_customer_ids uuid[],
    p_idempotency_keys text[],
    p_ids uuid[],
    p_expires_at timestamptz
) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := current_tenant_id();
    r record;
    verdicts text[];
    prior_ids uuid[];
    prior_codes text[];
    code_ids uuid[];
    codes text[];
    refused boolean;
    wanted integer;
    inserted integer;
BEGIN
    IF cardinality(p_customer_ids) IS DISTINCT FROM cardinality(p_idempotency_keys)
       OR cardinality(p_customer_ids) IS DISTINCT FROM cardinality(p_ids) THEN
        PERFORM loyalty_refuse('invalid_amount', 'customer, key and id arrays differ in length');
    END IF;
    PERFORM pg_advisory_xact_lock(rule_lock(p_rule_id));
    SELECT * INTO r FROM issuance_context(p_rule_id);

    -- LIMIT keeps each lateral lookup a probe: without it the planner may
    -- flatten the lookup into a hash join over every row of the tenant.
    WITH looked AS (
        SELECT x.n, x.customer_id, known.id AS known_id, known.code AS known_code,
               known.rule_id = p_rule_id AND known.customer_id = x.customer_id AS same,
               c.status AS customer_status, prior.issued
          FROM unnest(p_customer_ids, p_idempotency_keys) WITH ORDINALITY
               AS x(customer_id, idempotency_key, n)
          LEFT JOIN LATERAL (
                   SELECT i.id, i.rule_id, i.customer_id, v.code
                     FROM issuances i
                     LEFT JOIN voucher_codes v ON v.tenant_id = t AND v.id = i.voucher_code_id
                    WHERE i.tenant_id = t AND i.idempotency_key = x.idempotency_key
                    LIMIT 1) known ON true
          LEFT JOIN LATERAL (
                   SELECT status FROM customers
                    WHERE tenant_id = t AND id = x.customer_id
                    LIMIT 1) c ON true
          LEFT JOIN LATERAL (
                   SELECT count(*) AS issued FROM issuances
                    WHERE r.per_customer_limit IS NOT NULL
                      AND tenant_id = t AND rule_id = p_rule_id AND customer_id = x.customer_id
                      AND status <> 'cancelled') prior ON true
    ), judged AS (
        SELECT n, known_id, known_code,
               CASE
                   WHEN same THEN 'replayed'
                   WHEN known_id IS NOT NULL THEN 'idempotency_conflict'
                   WHEN customer_status IS NULL THEN 'customer_not_found'
                   WHEN customer_status <> 'active' THEN 'customer_inactive'
                   -- Earlier new issuances to the same customer in this
                   -- batch count against the limit too.
                   WHEN issued + count(*) FILTER (WHERE known_id IS NULL)
                                 OVER (PARTITION BY customer_id ORDER BY n) > r.per_customer_limit
                       THEN 'customer_limit_reached'
                   ELSE 'issue'
               END AS verdict
          FROM looked
    )
    SELECT array_agg(verdict ORDER BY n),
           array_agg(CASE WHEN verdict = 'replayed' THEN known_id END ORDER BY n),
           array_agg(CASE WHEN verdict = 'replayed' THEN known_code END ORDER BY n),
           bool_or(verdict NOT IN ('issue', 'replayed')),
           count(*) FILTER (WHERE verdict = 'issue')
      INTO verdicts, prior_ids, prior_codes, refused, wanted
      FROM judged;

    IF NOT refused AND wanted > 0 THEN
        IF r.uses_codes THEN
            SELECT array_agg(id ORDER BY id), array_agg(code ORDER BY id) INTO code_ids, codes
              FROM (SELECT id, code FROM voucher_codes
                     WHERE tenant_id = t AND reward_id = r.reward_id AND status = 'available'
                     LIMIT wanted
                       FOR UPDATE SKIP LOCKED) free;
            IF coalesce(cardinality(code_ids), 0) < wanted THEN
                PERFORM loyalty_refuse('no_codes_available',
                    format('%s voucher codes needed for reward %s, %s free',
                           wanted, r.reward_id, coalesce(cardinality(code_ids), 0)));
            END IF;
        END IF;

        -- The k-th new issuance gets the k-th code. The issuances' keys were
        -- checked above, so every row must go in. The batch reserves its
        -- whole cost below in one update, so its ledger entries must not
        -- also reserve at commit; the flag names this transaction, so a
        -- value set earlier in the session, or by anyone else, never matches.
        PERFORM set_config('loyalty.batch_reserved', pg_current_xact_id()::text, true);
        WITH fresh AS (
            SELECT x.n, x.customer_id, x.idempotency_key, x.id,
                   code_ids[row_number() OVER (ORDER BY x.n)] AS code_id
              FROM unnest(p_customer_ids, p_idempotency_keys, p_ids, verdicts) WITH ORDINALITY
                   AS x(customer_id, idempotency_key, id, verdict, n)
             WHERE x.verdict = 'issue'
        ), claimed AS (
            UPDATE voucher_codes v SET status = 'reserved', issuance_id = fresh.id
              FROM fresh
             WHERE r.uses_codes AND v.tenant_id = t AND v.id = fresh.code_id
        ), added AS (
            INSERT INTO issuances (tenant_id, id, campaign_id, rule_id, customer_id, reward_id, budget_id,
                                   voucher_code_id, status, cost_amount, currency, idempotency_key, expires_at)
            SELECT t, id, r.campaign_id, p_rule_id, customer_id, r.reward_id, r.budget_id,
                   code_id, 'issued', r.cost_amount, r.currency, idempotency_key, p_expires_at
              FROM fresh
             ORDER BY n
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            RETURNING id
        ), booked AS (
            INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
            SELECT t, r.budget_id, 'reserve', r.cost_amount, r.currency, 'issuance', id FROM added
        )
        SELECT count(*) INTO inserted FROM added;
        PERFORM set_config('loyalty.batch_reserved', '', true);
        IF inserted < wanted THEN
            RAISE EXCEPTION 'a concurrent call issued some of these idempotency keys; retry the batch'
                USING ERRCODE = '40001';
        END IF;

        IF r.global_limit IS NOT NULL THEN
            UPDATE rules SET issued_count = issued_count + wanted
             WHERE tenant_id = t AND id = p_rule_id AND issued_count + wanted <= global_limit;
            IF NOT FOUND THEN
                PERFORM loyalty_refuse('global_limit_reached',
                    format('rule %s cannot issue %s more within its global limit', p_rule_id, wanted));
            END IF;
        END IF;
        UPDATE budgets SET reserved = reserved + r.cost_amount * wanted
         WHERE tenant_id = t AND id = r.budget_id
           AND reserved + spent + r.cost_amount * wanted <= hard_cap;
        IF NOT FOUND THEN
            PERFORM loyalty_refuse('budget_exhausted',
                format('budget %s cannot cover %s issuances', r.budget_id, wanted));
        END IF;
    END IF;

    RETURN (
        SELECT jsonb_build_object('applied', NOT refused, 'items', coalesce(jsonb_agg(
                   jsonb_build_object('customer_id', x.customer_id, 'verdict', x.verdict,
                                      'issuance_id', CASE WHEN x.issued THEN x.id ELSE x.prior_id END,
                                      'voucher_code', CASE WHEN x.issued THEN codes[x.k] ELSE x.prior_code END)
                   ORDER BY x.n), '[]'))
          FROM (SELECT u.*, u.verdict = 'issue' AND NOT refused AS issued,
                       count(*) FILTER (WHERE u.verdict = 'issue') OVER (ORDER BY u.n) AS k
                  FROM unnest(p_customer_ids, p_ids, verdicts, prior_ids, prior_codes)
                       WITH ORDINALITY AS u(customer_id, id, verdict, prior_id, prior_code, n)) x);
END
$$;

-- Ending issuances (cancel, expire_due) changed in two ways:
--
-- Each issuance's code was found by scanning every code the statement had
-- just updated, quadratic in an expire_due batch whatever the plan; the
-- returned codes are now read once, as an array.
--
-- The codes are now updated before the budget is locked. A concurrent
-- issue's SKIP LOCKED claim can leave a lock on a code it then skipped (READ
-- COMMITTED re-checks a row that changed under it, and keeps the lock when
-- the row no longer matches), and that issue takes the budget at commit. Codes
-- before the budget is the order every path now follows, so the two wait for
-- each other instead of deadlocking.
CREATE OR REPLACE FUNCTION end_issuances(p_ids uuid[], p_status text) RETURNS integer
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := current_tenant_id();
    ended uuid[];
BEGIN
    IF p_status NOT IN ('cancelled', 'expired') THEN
        PERFORM loyalty_refuse('invalid_state', format('cannot end issuances as %s', p_status));
    END IF;
    SELECT array_agg(id) INTO ended FROM (
        SELECT id FROM issuances
         WHERE tenant_id = t AND id = ANY (p_ids) AND status = 'issued'
         ORDER BY id
           FOR UPDATE
    ) s;
    IF ended IS NULL THEN
        RETURN 0;
    END IF;
    -- A code back in the pool belongs to whoever gets it next. Which codes
    -- went back is read from the update itself, which waits for a
    -- concurrent delivery of the code: a snapshot read would miss one that
    -- committed meanwhile, and unlink a delivered code from its issuance.
    -- Only a cancel returns codes, and it ends one issuance, so the array
    -- stays short.
    WITH codes AS (
        UPDATE voucher_codes
           SET status = CASE WHEN p_status = 'cancelled' AND status = 'reserved'
                             THEN 'available' ELSE 'invalid' END,
               issuance_id = NULL
         WHERE tenant_id = t AND issuance_id = ANY (ended)
        RETURNING id, status
    )
    UPDATE issuances i
       SET status = p_status,
           voucher_code_id = CASE WHEN i.voucher_code_id = ANY (ARRAY(SELECT id FROM codes
                                                                      WHERE status = 'available'))
                                  THEN NULL ELSE i.voucher_code_id END
     WHERE i.tenant_id = t AND i.id = ANY (ended);
    PERFORM settle_pending_reservations();
    IF p_status = 'cancelled' THEN
        PERFORM 1 FROM rules
         WHERE tenant_id = t AND global_limit IS NOT NULL
           AND id IN (SELECT rule_id FROM issuances WHERE tenant_id = t AND id = ANY (ended))
         ORDER BY id
           FOR NO KEY UPDATE;
    END IF;
    PERFORM 1 FROM budgets
     WHERE tenant_id = t
       AND id IN (SELECT budget_id FROM issuances WHERE tenant_id = t AND id = ANY (ended))
     ORDER BY id
       FOR NO KEY UPDATE;
    IF p_status = 'cancelled' THEN
        UPDATE rules ru SET issued_count = ru.issued_count - s.n
          FROM (SELECT rule_id, count(*) AS n FROM issuances
                 WHERE tenant_id = t AND id = ANY (ended) GROUP BY rule_id) s
         WHERE ru.tenant_id = t AND ru.id = s.rule_id AND ru.global_limit IS NOT NULL;
    END IF;
    UPDATE budgets b SET reserved = b.reserved - s.total
      FROM (SELECT budget_id, sum(cost_amount) AS total FROM issuances
             WHERE tenant_id = t AND id = ANY (ended) GROUP BY budget_id) s
     WHERE b.tenant_id = t AND b.id = s.budget_id;
    INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    SELECT t, budget_id, 'release', cost_amount, currency, 'issuance', id
      FROM issuances WHERE tenant_id = t AND id = ANY (ended);
    RETURN cardinality(ended);
END
$$;

-- Per-customer limits count a customer's issuances of a rule that are not
-- cancelled. With the status filter in the index predicate, the count reads
-- the index alone (once vacuum has marked the pages all-visible) instead of
-- fetching every earlier issuance from the heap.
DROP INDEX issuances_rule_customer_idx;
CREATE INDEX issuances_rule_customer_idx ON issuances (tenant_id, rule_id, customer_id)
    WHERE status <> 'cancelled';

-- A rule with a global limit is, like the budget, one row every issuance of
-- the rule writes. Counted inside issue_reward, it stayed locked while the
-- answer travelled to the client and COMMIT travelled back. Counting from a
-- deferred constraint trigger takes the lock inside COMMIT instead, after
-- everything but the budget; the limit still binds: COMMIT fails with
-- global_limit_reached if the rule is used up by then. Batches count their
-- issuances in one update and skip this trigger, as they skip the budget's.
CREATE FUNCTION count_issuance_at_commit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- Issuances hold the rule's lock shared until commit, so a limit cannot
    -- be added between this read and the update.
    IF (SELECT global_limit FROM rules WHERE tenant_id = NEW.tenant_id AND id = NEW.rule_id) IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE rules SET issued_count = issued_count + 1
     WHERE tenant_id = NEW.tenant_id AND id = NEW.rule_id
       AND global_limit IS NOT NULL AND issued_count < global_limit;
    IF NOT FOUND AND EXISTS (SELECT 1 FROM rules
                              WHERE tenant_id = NEW.tenant_id AND id = NEW.rule_id
                                AND global_limit IS NOT NULL) THEN
        PERFORM loyalty_refuse('global_limit_reached',
            format('rule %s reached its global limit', NEW.rule_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER issuances_count_at_commit
    AFTER INSERT ON issuances
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (current_setting('loyalty.batch_reserved', true)
          IS DISTINCT FROM pg_current_xact_id()::text)
    EXECUTE FUNCTION count_issuance_at_commit();

-- The rule is counted before the budget is reserved: rules before budgets is
-- the order every path takes.
CREATE OR REPLACE FUNCTION settle_pending_reservations() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    SET CONSTRAINTS issuances_count_at_commit, ledger_entries_reserve_at_commit IMMEDIATE;
    SET CONSTRAINTS issuances_count_at_commit, ledger_entries_reserve_at_commit DEFERRED;
END
$$;

-- A limit added to a rule counts the issuances made so far, its own
-- transaction's pending ones included: they are counted first, while the
-- rule has no limit, so none is counted twice.
CREATE OR REPLACE FUNCTION recount_rule_issuances() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- Wait for issuances in flight, which read the rule before this change.
    PERFORM pg_advisory_xact_lock(rule_lock(NEW.id));
    PERFORM settle_pending_reservations();
    NEW.issued_count := (SELECT count(*) FROM issuances
                          WHERE tenant_id = NEW.tenant_id AND rule_id = NEW.id
                            AND status <> 'cancelled');
    RETURN NEW;
END
$$;

-- Refuses a used-up global limit up front without a lock, like an exhausted
-- budget, and leaves the count to the issuance's trigger at commit.
CREATE OR REPLACE FUNCTION issue_reward(
    p_id uuid,
    p_rule_id uuid,
    p_customer_id uuid,
    p_idempotency_key text,
    p_expires_at timestamptz
) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := current_tenant_id();
    r record;
    prior uuid;
    code_id uuid;
    customer_status text;
    refusal text;
    refusal_message text;
BEGIN
    prior := replayed_issuance(p_idempotency_key, p_rule_id, p_customer_id);
    IF prior IS NOT NULL THEN
        RETURN issuance_json(prior, true);
    END IF;
    PERFORM pg_advisory_xact_lock_shared(rule_lock(p_rule_id));
    SELECT * INTO r FROM issuance_context(p_rule_id);
    customer_status := (SELECT status FROM customers WHERE tenant_id = t AND id = p_customer_id);
    IF customer_status IS NULL THEN
        PERFORM loyalty_refuse('not_found', format('customer %s not found', p_customer_id));
    ELSIF customer_status <> 'active' THEN
        PERFORM loyalty_refuse('invalid_state', format('customer %s is %s', p_customer_id, customer_status));
    END IF;
    -- Without locks: an exhausted budget or a used-up global limit is
    -- refused here, before any work; the binding checks run at commit.
    IF NOT EXISTS (SELECT 1 FROM budgets
                    WHERE tenant_id = t AND id = r.budget_id
                      AND reserved + spent + r.cost_amount <= hard_cap) THEN
        refusal := 'budget_exhausted';
        refusal_message := format('budget %s is exhausted', r.budget_id);
    ELSIF r.global_limit IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM rules
                           WHERE tenant_id = t AND id = p_rule_id AND issued_count < global_limit) THEN
        refusal := 'global_limit_reached';
        refusal_message := format('rule %s reached its global limit', p_rule_id);
    END IF;
    IF refusal IS NOT NULL THEN
        -- The first delivery of this key may have committed, and taken the
        -- last of the budget or the limit, while we waited for the rule lock.
        prior := replayed_issuance(p_idempotency_key, p_rule_id, p_customer_id);
        IF prior IS NOT NULL THEN
            RETURN issuance_json(prior, true);
        END IF;
        PERFORM loyalty_refuse(refusal, refusal_message);
    END IF;
    IF r.per_customer_limit IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(customer_limit_lock(p_rule_id, p_customer_id));
        -- A concurrent delivery of this key may have committed while we waited.
        prior := replayed_issuance(p_idempotency_key, p_rule_id, p_customer_id);
        IF prior IS NOT NULL THEN
            RETURN issuance_json(prior, true);
        END IF;
        IF (SELECT count(*) FROM issuances
             WHERE tenant_id = t AND rule_id = p_rule_id AND customer_id = p_customer_id
               AND status <> 'cancelled') >= r.per_customer_limit THEN
            PERFORM loyalty_refuse('customer_limit_reached',
                format('customer %s reached the limit of rule %s', p_customer_id, p_rule_id));
        END IF;
    END IF;
    IF r.uses_codes THEN
        UPDATE voucher_codes SET status = 'reserved', issuance_id = p_id
         WHERE tenant_id = t
           AND id = (SELECT id FROM voucher_codes
                      WHERE tenant_id = t AND reward_id = r.reward_id AND status = 'available'
                      LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id INTO code_id;
        IF code_id IS NULL THEN
            PERFORM loyalty_refuse('no_codes_available',
                format('no voucher codes left for reward %s', r.reward_id));
        END IF;
    END IF;
    INSERT INTO issuances (tenant_id, id, campaign_id, rule_id, customer_id, reward_id, budget_id,
                           voucher_code_id, status, cost_amount, currency, idempotency_key, expires_at)
    VALUES (t, p_id, r.campaign_id, p_rule_id, p_customer_id, r.reward_id, r.budget_id,
            code_id, 'issued', r.cost_amount, r.currency, p_idempotency_key, p_expires_at)
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;
    IF NOT FOUND THEN
        -- Same key from a concurrent call with another rule or customer: it won.
        IF code_id IS NOT NULL THEN
            UPDATE voucher_codes SET status = 'available', issuance_id = NULL
             WHERE tenant_id = t AND id = code_id;
        END IF;
        RETURN issuance_json(replayed_issuance(p_idempotency_key, p_rule_id, p_customer_id), true);
    END IF;
    -- The issuance's trigger counts it against a global limit, and the
    -- ledger entry's reserves its cost on the budget, both at commit.
    INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    VALUES (t, r.budget_id, 'reserve', r.cost_amount, r.currency, 'issuance', p_id);
    RETURN issuance_json(p_id, false);
END
$$;
