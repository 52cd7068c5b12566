-- Restores the function bodies of migrations 000006 and 000007 and 000004's index.

-- One reward for many customers, all or nothing, in a handful of set-based
-- statements. Per-customer refusals (unknown or inactive customer, limit
-- reached) are reported without writing anything: {"applied": false,
-- "items": [...]}. Batch-wide ones (codes, global limit, budget) raise.
-- Verdicts travel between the statements as arrays in input order, and the
-- answer is built from them: only voucher codes are looked up again.
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
    prior_codes uuid[];
    refused boolean;
    wanted integer;
    claimed integer;
    inserted integer;
BEGIN
    IF cardinality(p_customer_ids) IS DISTINCT FROM cardinality(p_idempotency_keys)
       OR cardinality(p_customer_ids) IS DISTINCT FROM cardinality(p_ids) THEN
        PERFORM loyalty_refuse('invalid_amount', 'customer, key and id arrays differ in length');
    END IF;
    PERFORM pg_advisory_xact_lock(rule_lock(p_rule_id));
    SELECT * INTO r FROM issuance_context(p_rule_id);

    -- Keys are looked up one by one through the unique index: as a join,
    -- the planner may hash every issuance of the tenant instead, a cost that
    -- grows with the table rather than with the batch.
    WITH input AS (
        SELECT x.customer_id, x.idempotency_key, x.n
          FROM unnest(p_customer_ids, p_idempotency_keys) WITH ORDINALITY
               AS x(customer_id, idempotency_key, n)
    ), known AS (
        SELECT input.n, i.id, i.voucher_code_id,
               i.rule_id = p_rule_id AND i.customer_id = input.customer_id AS same
          FROM input
          JOIN LATERAL (
                   SELECT id, rule_id, customer_id, voucher_code_id FROM issuances
                    WHERE tenant_id = t AND idempotency_key = input.idempotency_key
                    LIMIT 1) i ON true
    ), fresh AS (
        SELECT input.n, row_number() OVER (PARTITION BY input.customer_id ORDER BY input.n) AS nth
          FROM input
         WHERE NOT EXISTS (SELECT 1 FROM known WHERE known.n = input.n)
    ), prior AS (
        SELECT customer_id, count(*) AS issued
          FROM issuances
         WHERE r.per_customer_limit IS NOT NULL
           AND tenant_id = t AND rule_id = p_rule_id AND customer_id = ANY (p_customer_ids)
           AND status <> 'cancelled'
         GROUP BY customer_id
    ), judged AS (
        SELECT input.n, known.id AS known_id, known.voucher_code_id AS known_code, known.same,
               CASE
                   WHEN known.same THEN 'replayed'
                   WHEN known.n IS NOT NULL THEN 'idempotency_conflict'
                   WHEN c.id IS NULL THEN 'customer_not_found'
                   WHEN c.status <> 'active' THEN 'customer_inactive'
                   WHEN r.per_customer_limit IS NOT NULL
                        AND coalesce(prior.issued, 0) + fresh.nth > r.per_customer_limit
                       THEN 'customer_limit_reached'
                   ELSE 'issue'
               END AS verdict
          FROM input
          LEFT JOIN known ON known.n = input.n
          LEFT JOIN fresh ON fresh.n = input.n
          LEFT JOIN customers c ON c.tenant_id = t AND c.id = input.customer_id
          LEFT JOIN prior ON prior.customer_id = input.customer_id
    )
    SELECT array_agg(verdict ORDER BY n),
           array_agg(CASE WHEN same THEN known_id END ORDER BY n),
           array_agg(CASE WHEN same THEN known_code END ORDER BY n),
           bool_or(verdict NOT IN ('issue', 'replayed')),
           count(*) FILTER (WHERE verdict = 'issue')
      INTO verdicts, prior_ids, prior_codes, refused, wanted
      FROM judged;

    IF NOT refused AND wanted > 0 THEN
        -- Codes, issuances and ledger entries in one statement; the
        -- issuances' idempotency keys were checked above, so every row must
        -- go in. The batch reserves its whole cost below in one update, so
        -- its ledger entries must not also reserve at commit. The flag names
        -- this transaction, so a value set earlier in the session, or by
        -- anyone else, never matches.
        PERFORM set_config('loyalty.batch_reserved', pg_current_xact_id()::text, true);
        WITH fresh AS (
            SELECT x.n, x.customer_id, x.idempotency_key, x.id, row_number() OVER (ORDER BY x.n) AS k
              FROM unnest(p_customer_ids, p_idempotency_keys, p_ids, verdicts) WITH ORDINALITY
                   AS x(customer_id, idempotency_key, id, verdict, n)
             WHERE x.verdict = 'issue'
        ), free AS (
            SELECT id FROM voucher_codes
             WHERE r.uses_codes AND tenant_id = t AND reward_id = r.reward_id AND status = 'available'
             LIMIT wanted
               FOR UPDATE SKIP LOCKED
        ), paired AS (
            SELECT fresh.*, codes.id AS code_id
              FROM fresh
              LEFT JOIN (SELECT id, row_number() OVER () AS k FROM free) codes USING (k)
        ), claimed AS (
            UPDATE voucher_codes v SET status = 'reserved', issuance_id = paired.id
              FROM paired
             WHERE v.tenant_id = t AND v.id = paired.code_id
            RETURNING v.id
        ), added AS (
            INSERT INTO issuances (tenant_id, id, campaign_id, rule_id, customer_id, reward_id, budget_id,
                                   voucher_code_id, status, cost_amount, currency, idempotency_key, expires_at)
            SELECT t, id, r.campaign_id, p_rule_id, customer_id, r.reward_id, r.budget_id,
                   code_id, 'issued', r.cost_amount, r.currency, idempotency_key, p_expires_at
              FROM paired
             ORDER BY n
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            RETURNING id
        ), booked AS (
            INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
            SELECT t, r.budget_id, 'reserve', r.cost_amount, r.currency, 'issuance', id FROM added
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM claimed), (SELECT count(*) FROM added) INTO claimed, inserted;
        PERFORM set_config('loyalty.batch_reserved', '', true);
        IF r.uses_codes AND claimed < wanted THEN
            PERFORM loyalty_refuse('no_codes_available',
                format('%s voucher codes needed for reward %s, %s free', wanted, r.reward_id, claimed));
        END IF;
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
                                      'issuance_id', coalesce(x.issued_id, x.prior_id),
                                      'voucher_code', coalesce(claimed.code, replayed.code))
                   ORDER BY x.n), '[]'))
          FROM (SELECT x.*, CASE WHEN x.verdict = 'issue' AND NOT refused THEN x.id END AS issued_id
                  FROM unnest(p_customer_ids, p_ids, verdicts, prior_ids, prior_codes)
                       WITH ORDINALITY AS x(customer_id, id, verdict, prior_id, prior_code, n)) x
          LEFT JOIN voucher_codes claimed
            ON r.uses_codes AND claimed.tenant_id = t AND claimed.issuance_id = x.issued_id
          LEFT JOIN voucher_codes replayed
            ON replayed.tenant_id = t AND replayed.id = x.prior_code);
END
$$;

-- Pending reservations are settled first, before the rules and budgets are
-- locked in id order. That takes this transaction's budgets early, but only
-- a guard that issues and then ends issuances holds any, and such a guard
-- already held them before the trigger existed.
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
           -- A code back in the pool belongs to whoever gets it next.
           voucher_code_id = CASE WHEN EXISTS (SELECT 1 FROM codes
                                                WHERE codes.id = i.voucher_code_id
                                                  AND codes.status = 'available')
                                  THEN NULL ELSE i.voucher_code_id END
     WHERE i.tenant_id = t AND i.id = ANY (ended);
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

DROP INDEX issuances_rule_customer_idx;
CREATE INDEX issuances_rule_customer_idx ON issuances (tenant_id, rule_id, customer_id);

DROP TRIGGER issuances_count_at_commit ON issuances;
DROP FUNCTION count_issuance_at_commit();

CREATE OR REPLACE FUNCTION settle_pending_reservations() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    SET CONSTRAINTS ledger_entries_reserve_at_commit IMMEDIATE;
    SET CONSTRAINTS ledger_entries_reserve_at_commit DEFERRED;
END
$$;

CREATE OR REPLACE FUNCTION recount_rule_issuances() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- Wait for issuances in flight, which read the rule before this change.
    PERFORM pg_advisory_xact_lock(rule_lock(NEW.id));
    NEW.issued_count := (SELECT count(*) FROM issuances
                          WHERE tenant_id = NEW.tenant_id AND rule_id = NEW.id
                            AND status <> 'cancelled');
    RETURN NEW;
END
$$;

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
    answer jsonb;
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
    -- Without a lock: an exhausted budget is refused here, before any work;
    -- the binding check runs at commit.
    IF NOT EXISTS (SELECT 1 FROM budgets
                    WHERE tenant_id = t AND id = r.budget_id
                      AND reserved + spent + r.cost_amount <= hard_cap) THEN
        -- The first delivery of this key may have committed, and taken the
        -- last of the budget, while we waited for the rule lock.
        prior := replayed_issuance(p_idempotency_key, p_rule_id, p_customer_id);
        IF prior IS NOT NULL THEN
            RETURN issuance_json(prior, true);
        END IF;
        PERFORM loyalty_refuse('budget_exhausted', format('budget %s is exhausted', r.budget_id));
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
    -- Everything but the rule's counter is done, the answer included, so its
    -- lock is held for as short a time as possible. The ledger entry's
    -- trigger reserves the cost on the budget at commit.
    INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    VALUES (t, r.budget_id, 'reserve', r.cost_amount, r.currency, 'issuance', p_id);
    answer := issuance_json(p_id, false);
    IF r.global_limit IS NOT NULL THEN
        UPDATE rules SET issued_count = issued_count + 1
         WHERE tenant_id = t AND id = p_rule_id AND issued_count < global_limit;
        IF NOT FOUND THEN
            PERFORM loyalty_refuse('global_limit_reached',
                format('rule %s reached its global limit', p_rule_id));
        END IF;
    END IF;
    RETURN answer;
END
$$;
