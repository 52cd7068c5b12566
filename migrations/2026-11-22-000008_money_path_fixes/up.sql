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
-- just updated, quadratic in the batch whatever the plan; each issuance now
-- probes its own code by key.
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
    WITH codes AS (
        UPDATE voucher_codes
           SET status = CASE WHEN p_status = 'cancelled' AND status = 'reserved'
                             THEN 'available' ELSE 'invalid' END,
               issuance_id = NULL
         WHERE tenant_id = t AND issuance_id = ANY (ended)
    )
    UPDATE issuances i
       SET status = p_status,
           -- A code back in the pool belongs to whoever gets it next. The
           -- lookup sees the code as it was before this statement.
           voucher_code_id = CASE WHEN p_status = 'cancelled'
                                   AND (SELECT v.status FROM voucher_codes v
                                         WHERE v.tenant_id = t AND v.id = i.voucher_code_id
                                           AND v.issuance_id = i.id) = 'reserved'
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
