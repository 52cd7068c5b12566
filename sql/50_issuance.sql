-- Issuing, redeeming, cancelling and expiring rewards. Each is one statement
-- from the client's side. The entry points run as SECURITY DEFINER, since
-- loyalty_app may not write issuances, ledger entries or code statuses
-- itself; every statement in them filters by the verified tenant, and
-- row-level security, forced on the owner, binds them as well.

-- An issuance as JSON (money as a string, so no precision is lost), with its
-- voucher code and whether this call replayed an earlier one. plpgsql, so
-- the query is planned once per session rather than on every call.
CREATE FUNCTION loyalty.issuance_json(p_tenant_id uuid, p_id uuid, p_replayed boolean) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    -- A hold's code stays hidden until the hold is confirmed: a voided or
    -- lapsed hold puts it back in the pool, so it must not have been shown.
    RETURN (SELECT to_jsonb(i) || jsonb_build_object(
                       'cost_amount', i.cost_amount::text,
                       'voucher_code', CASE WHEN i.status <> 'reserved' THEN v.code END,
                       'replayed', p_replayed)
              FROM public.issuances i
              LEFT JOIN public.voucher_codes v ON v.tenant_id = i.tenant_id AND v.id = i.voucher_code_id
             WHERE i.tenant_id = p_tenant_id AND i.id = p_id);
END
$$;

-- Everything an issuance needs to know about its rule, checked.
CREATE FUNCTION loyalty.issuance_context(p_tenant_id uuid, p_rule_id uuid)
RETURNS TABLE (campaign_id uuid, reward_id uuid, budget_id uuid, cost_amount numeric,
               currency text, uses_codes boolean, per_customer_limit integer,
               global_limit integer)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    t uuid := p_tenant_id;
    r record;
BEGIN
    SELECT ru.campaign_id, ru.reward_id, ru.active AS rule_active, ru.per_customer_limit,
           ru.global_limit,
           c.status AS campaign_status, c.start_at, c.end_at, c.budget_id,
           rw.cost_amount, rw.currency, rw.uses_codes, rw.status AS reward_status,
           b.currency AS budget_currency
      INTO r
      FROM public.rules ru
      JOIN public.campaigns c ON c.tenant_id = ru.tenant_id AND c.id = ru.campaign_id
      JOIN public.reward_catalog rw ON rw.tenant_id = ru.tenant_id AND rw.id = ru.reward_id
      LEFT JOIN public.budgets b ON b.tenant_id = c.tenant_id AND b.id = c.budget_id
     WHERE ru.tenant_id = t AND ru.id = p_rule_id;
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('rule_not_found', format('rule %s not found', p_rule_id));
    ELSIF NOT r.rule_active THEN
        PERFORM loyalty.refuse('rule_inactive', format('rule %s is inactive', p_rule_id));
    ELSIF r.campaign_status <> 'active' OR r.start_at > now() OR r.end_at < now() THEN
        PERFORM loyalty.refuse('campaign_not_running',
            format('campaign %s is %s or outside its window', r.campaign_id, r.campaign_status));
    ELSIF r.reward_status <> 'active' THEN
        PERFORM loyalty.refuse('reward_archived', format('reward %s is archived', r.reward_id));
    ELSIF r.budget_id IS NULL THEN
        PERFORM loyalty.refuse('campaign_without_budget',
            format('campaign %s has no budget', r.campaign_id));
    ELSIF r.budget_currency <> r.currency THEN
        PERFORM loyalty.refuse('currency_mismatch',
            format('reward costs %s but the budget is in %s', r.currency, r.budget_currency),
            jsonb_build_object('reward', r.currency, 'budget', r.budget_currency));
    END IF;
    RETURN QUERY SELECT r.campaign_id, r.reward_id, r.budget_id, r.cost_amount, r.currency,
                        r.uses_codes, r.per_customer_limit, r.global_limit;
END
$$;

-- The lock that serialises issuances of one rule to one customer, so a
-- per-customer limit is counted and used atomically.
CREATE FUNCTION loyalty.customer_limit_lock(p_rule_id uuid, p_customer_id uuid) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtextextended(p_rule_id::text || p_customer_id::text, 0) $$;

-- Single issuances hold this shared; a batch, and a limit being added to the
-- rule, hold it exclusive. One lock per batch instead of one per customer
-- keeps large batches within the server's lock table.
CREATE FUNCTION loyalty.rule_lock(p_rule_id uuid) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtextextended('rule:' || p_rule_id::text, 0) $$;

-- The lock that serialises every delivery of one idempotency key, taken
-- before anything scarce (a code, the budget) is claimed: a retry racing its
-- first call waits for it and replays, instead of finding the last code
-- held by that very call.
CREATE FUNCTION loyalty.idempotency_lock(p_tenant_id uuid, p_key text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtextextended('key:' || p_tenant_id::text || ':' || p_key, 0) $$;

-- The issuance an idempotency key already stands for, if any. A key reused
-- for another rule or customer is refused, not replayed: that answer would
-- hand one customer's voucher code to another.
CREATE FUNCTION loyalty.replayed_issuance(p_tenant_id uuid, p_key text, p_rule_id uuid, p_customer_id uuid)
RETURNS uuid
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    i record;
BEGIN
    SELECT id, rule_id, customer_id INTO i FROM public.issuances
     WHERE tenant_id = p_tenant_id AND idempotency_key = p_key;
    IF FOUND AND (i.rule_id <> p_rule_id OR i.customer_id <> p_customer_id) THEN
        PERFORM loyalty.refuse('idempotency_conflict',
            format('idempotency key %s was used for another rule or customer', p_key));
    END IF;
    RETURN i.id;
END
$$;

-- Issues one reward. Order matters: reads and the per-customer lock first,
-- then the voucher code (SKIP LOCKED) and the issuance row. The two rows
-- every issuance of the campaign shares, the budget and a limited rule's
-- counter, are written at commit by the ledger entry's deferred trigger
-- (60_settlement.sql), so their locks are not held across the client's round
-- trip. An exhausted budget or a used-up global limit is still refused here,
-- without a lock, before any work.
CREATE FUNCTION loyalty.issue_reward(
    p_tenant_id uuid,
    p_id uuid,
    p_rule_id uuid,
    p_customer_id uuid,
    p_idempotency_key text,
    p_expires_at timestamptz
) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    r record;
    prior uuid;
    code_id uuid;
    customer_status text;
    refusal loyalty.refusal;
    refusal_message text;
    refusal_data jsonb := '{}';
BEGIN
    prior := loyalty.replayed_issuance(t, p_idempotency_key, p_rule_id, p_customer_id);
    IF prior IS NOT NULL THEN
        RETURN loyalty.issuance_json(t, prior, true);
    END IF;
    PERFORM pg_advisory_xact_lock(loyalty.idempotency_lock(t, p_idempotency_key));
    -- A concurrent delivery of this key may have committed while we waited.
    prior := loyalty.replayed_issuance(t, p_idempotency_key, p_rule_id, p_customer_id);
    IF prior IS NOT NULL THEN
        RETURN loyalty.issuance_json(t, prior, true);
    END IF;
    PERFORM pg_advisory_xact_lock_shared(loyalty.rule_lock(p_rule_id));
    SELECT * INTO r FROM loyalty.issuance_context(t, p_rule_id);
    customer_status := (SELECT status FROM public.customers WHERE tenant_id = t AND id = p_customer_id);
    IF customer_status IS NULL THEN
        PERFORM loyalty.refuse('customer_not_found', format('customer %s not found', p_customer_id));
    ELSIF customer_status <> 'active' THEN
        PERFORM loyalty.refuse('customer_inactive',
            format('customer %s is %s', p_customer_id, customer_status),
            jsonb_build_object('status', customer_status));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM public.budgets
                    WHERE tenant_id = t AND id = r.budget_id
                      AND reserved + spent + r.cost_amount <= hard_cap) THEN
        refusal := 'budget_exhausted';
        refusal_message := format('budget %s is exhausted', r.budget_id);
    ELSIF r.global_limit IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM public.rules
                           WHERE tenant_id = t AND id = p_rule_id AND issued_count < global_limit) THEN
        refusal := 'limit_reached';
        refusal_message := format('rule %s reached its global limit', p_rule_id);
        refusal_data := '{"scope": "global"}';
    END IF;
    IF refusal IS NOT NULL THEN
        -- The first delivery of this key may have committed, and taken the
        -- last of the budget or the limit, while we waited for the rule lock.
        prior := loyalty.replayed_issuance(t, p_idempotency_key, p_rule_id, p_customer_id);
        IF prior IS NOT NULL THEN
            RETURN loyalty.issuance_json(t, prior, true);
        END IF;
        PERFORM loyalty.refuse(refusal, refusal_message, refusal_data);
    END IF;
    IF r.per_customer_limit IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(loyalty.customer_limit_lock(p_rule_id, p_customer_id));
        -- A concurrent delivery of this key may have committed while we waited.
        prior := loyalty.replayed_issuance(t, p_idempotency_key, p_rule_id, p_customer_id);
        IF prior IS NOT NULL THEN
            RETURN loyalty.issuance_json(t, prior, true);
        END IF;
        IF (SELECT count(*) FROM public.issuances
             WHERE tenant_id = t AND rule_id = p_rule_id AND customer_id = p_customer_id
               AND status <> 'cancelled') >= r.per_customer_limit THEN
            PERFORM loyalty.refuse('limit_reached',
                format('customer %s reached the limit of rule %s', p_customer_id, p_rule_id),
                '{"scope": "customer"}');
        END IF;
    END IF;
    IF r.uses_codes THEN
        UPDATE public.voucher_codes SET status = 'reserved', issuance_id = p_id
         WHERE tenant_id = t
           AND id = (SELECT id FROM public.voucher_codes
                      WHERE tenant_id = t AND reward_id = r.reward_id AND status = 'available'
                      LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id INTO code_id;
        IF code_id IS NULL THEN
            PERFORM loyalty.refuse('no_codes_available',
                format('no voucher codes left for reward %s', r.reward_id));
        END IF;
    END IF;
    INSERT INTO public.issuances (tenant_id, id, campaign_id, rule_id, customer_id, reward_id, budget_id,
                           voucher_code_id, status, cost_amount, currency, idempotency_key, expires_at)
    VALUES (t, p_id, r.campaign_id, p_rule_id, p_customer_id, r.reward_id, r.budget_id,
            code_id, 'issued', r.cost_amount, r.currency, p_idempotency_key, p_expires_at)
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;
    IF NOT FOUND THEN
        -- Same key from a concurrent call with another rule or customer: it won.
        IF code_id IS NOT NULL THEN
            UPDATE public.voucher_codes SET status = 'available', issuance_id = NULL
             WHERE tenant_id = t AND id = code_id;
        END IF;
        RETURN loyalty.issuance_json(t,
            loyalty.replayed_issuance(t, p_idempotency_key, p_rule_id, p_customer_id), true);
    END IF;
    INSERT INTO public.ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    VALUES (t, r.budget_id, 'reserve', r.cost_amount, r.currency, 'issuance', p_id);
    RETURN loyalty.issuance_json(t, p_id, false);
END
$$;

-- p_row repeated p_count times, comma-separated, with "[k]" in copy k
-- replaced by "[k]"'s number: the rows of a VALUES list that reads element k
-- of array parameters.
CREATE FUNCTION loyalty.numbered_rows(p_row text, p_count integer) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    RETURN (SELECT string_agg(replace(p_row, '[k]', format('[%s]', k)), ', ' ORDER BY k)
              FROM generate_series(1, p_count) AS k);

-- One reward for many customers, all or nothing. Per-customer refusals
-- (unknown or inactive customer, limit reached, key reused) are reported
-- without writing anything: {"applied": false, "items": [...]}. Batch-wide
-- ones (codes, global limit, budget) raise.
--
-- plpgsql caches each statement's plan, and after five calls in a session it
-- may keep a generic plan, made without the arguments' values. Such a plan
-- guesses ten rows for any unnest of an argument array, and nesting a join of
-- two derived tables on that guess makes a statement quadratic in the batch
-- (measured: 4 ms became 100 ms for 1,000 recipients). Recipients are
-- therefore matched to their index entries by lateral probes and to each
-- other by position in arrays, never by joining two derived tables, so every
-- plan the planner can pick is linear in the batch.
CREATE FUNCTION loyalty.issue_reward_batch(
    p_tenant_id uuid,
    p_rule_id uuid,
    p_customer_ids uuid[],
    p_idempotency_keys text[],
    p_ids uuid[],
    p_expires_at timestamptz
) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    batch uuid := gen_random_uuid();
    r record;
    verdicts text[];
    refusals jsonb[];
    prior_ids uuid[];
    prior_codes text[];
    code_ids uuid[];
    codes text[];
    new_ids uuid[];
    new_customers uuid[];
    new_keys text[];
    refused boolean;
    wanted integer;
    inserted integer;
    written integer;
    lo integer;
    hi integer;
    write_chunk constant integer := 25;
BEGIN
    IF cardinality(p_customer_ids) IS DISTINCT FROM cardinality(p_idempotency_keys)
       OR cardinality(p_customer_ids) IS DISTINCT FROM cardinality(p_ids) THEN
        PERFORM loyalty.refuse('invalid_argument', 'customer, key and id arrays differ in length',
            jsonb_build_object('argument', 'recipients', 'reason', 'arrays differ in length'));
    END IF;
    PERFORM pg_advisory_xact_lock(loyalty.rule_lock(p_rule_id));
    SELECT * INTO r FROM loyalty.issuance_context(t, p_rule_id);

    -- LIMIT keeps each lateral lookup a probe: without it the planner may
    -- flatten the lookup into a hash join over every row of the tenant.
    WITH looked AS (
        SELECT x.n, x.customer_id, known.id AS known_id, known.code AS known_code,
               known.rule_id = p_rule_id AND known.customer_id = x.customer_id AS same,
               c.status AS customer_status, prior.issued
          FROM unnest(p_customer_ids, p_idempotency_keys) WITH ORDINALITY
               AS x(customer_id, idempotency_key, n)
          LEFT JOIN LATERAL (
                   SELECT i.id, i.rule_id, i.customer_id,
                          CASE WHEN i.status <> 'reserved' THEN v.code END AS code
                     FROM public.issuances i
                     LEFT JOIN public.voucher_codes v ON v.tenant_id = t AND v.id = i.voucher_code_id
                    WHERE i.tenant_id = t AND i.idempotency_key = x.idempotency_key
                    LIMIT 1) known ON true
          LEFT JOIN LATERAL (
                   SELECT status FROM public.customers
                    WHERE tenant_id = t AND id = x.customer_id
                    LIMIT 1) c ON true
          LEFT JOIN LATERAL (
                   SELECT count(*) AS issued FROM public.issuances
                    WHERE r.per_customer_limit IS NOT NULL
                      AND tenant_id = t AND rule_id = p_rule_id AND customer_id = x.customer_id
                      AND status <> 'cancelled') prior ON true
    ), judged AS (
        SELECT n, known_id, known_code, coalesce(same, false) AS same,
               CASE
                   WHEN same THEN NULL
                   WHEN known_id IS NOT NULL THEN loyalty.refusal_json('idempotency_conflict')
                   WHEN customer_status IS NULL THEN loyalty.refusal_json('customer_not_found')
                   WHEN customer_status <> 'active'
                       THEN loyalty.refusal_json('customer_inactive',
                                            jsonb_build_object('status', customer_status))
                   -- Earlier new issuances to the same customer in this
                   -- batch count against the limit too.
                   WHEN issued + count(*) FILTER (WHERE known_id IS NULL)
                                 OVER (PARTITION BY customer_id ORDER BY n) > r.per_customer_limit
                       THEN loyalty.refusal_json('limit_reached', '{"scope": "customer"}')
               END AS refusal
          FROM looked
    )
    SELECT array_agg(CASE WHEN same THEN 'replayed' WHEN refusal IS NULL THEN 'issue' ELSE 'refused' END
                     ORDER BY n),
           array_agg(refusal ORDER BY n),
           array_agg(CASE WHEN same THEN known_id END ORDER BY n),
           array_agg(CASE WHEN same THEN known_code END ORDER BY n),
           bool_or(refusal IS NOT NULL),
           count(*) FILTER (WHERE NOT same AND refusal IS NULL)
      INTO verdicts, refusals, prior_ids, prior_codes, refused, wanted
      FROM judged;

    IF NOT refused AND wanted > 0 THEN
        IF r.uses_codes THEN
            SELECT array_agg(id ORDER BY id), array_agg(code ORDER BY id) INTO code_ids, codes
              FROM (SELECT id, code FROM public.voucher_codes
                     WHERE tenant_id = t AND reward_id = r.reward_id AND status = 'available'
                     LIMIT wanted
                       FOR UPDATE SKIP LOCKED) free;
            IF coalesce(cardinality(code_ids), 0) < wanted THEN
                PERFORM loyalty.refuse('no_codes_available',
                    format('%s voucher codes needed for reward %s, %s free',
                           wanted, r.reward_id, coalesce(cardinality(code_ids), 0)));
            END IF;
        END IF;

        -- The k-th new issuance gets the k-th code. The issuances' keys were
        -- checked above, so every row must go in. The ledger entries carry
        -- the batch's id: the batch reserves their whole cost below in one
        -- update, and the commit-time trigger skips marked entries.
        SELECT array_agg(x.id ORDER BY x.n), array_agg(x.customer_id ORDER BY x.n),
               array_agg(x.idempotency_key ORDER BY x.n)
          INTO new_ids, new_customers, new_keys
          FROM unnest(p_customer_ids, p_idempotency_keys, p_ids, verdicts) WITH ORDINALITY
               AS x(customer_id, idempotency_key, id, verdict, n)
         WHERE x.verdict = 'issue';
        -- The writes are multi-row INSERT ... VALUES whose row k reads
        -- element k of slices of the argument arrays: Citus routes each to
        -- the tenant's shard, where an INSERT ... SELECT from the arrays
        -- would go through COPY, which row-level security refuses
        -- (docs/citus.md). Citus copies the whole array into every row that
        -- reads it, so a statement takes a slice of write_chunk rows.
        inserted := 0;
        FOR lo IN 1..wanted BY write_chunk LOOP
            hi := least(lo + write_chunk - 1, wanted);
            EXECUTE 'INSERT INTO public.issuances (tenant_id, id, campaign_id, rule_id, customer_id, reward_id,
                         budget_id, voucher_code_id, status, cost_amount, currency, idempotency_key, expires_at)
                     VALUES ' || loyalty.numbered_rows(
                         '($1, $2[k], $3, $4, $5[k], $6, $7, $8[k], ''issued'', $9, $10, $11[k], $12)', hi - lo + 1)
                 || ' ON CONFLICT (tenant_id, idempotency_key) DO NOTHING'
                USING t, new_ids[lo:hi], r.campaign_id, p_rule_id, new_customers[lo:hi], r.reward_id,
                      r.budget_id, code_ids[lo:hi], r.cost_amount, r.currency, new_keys[lo:hi], p_expires_at;
            GET DIAGNOSTICS written = ROW_COUNT;
            inserted := inserted + written;
        END LOOP;
        IF inserted < wanted THEN
            RAISE EXCEPTION 'a concurrent call issued some of these idempotency keys; retry the batch'
                USING ERRCODE = '40001';
        END IF;
        IF r.uses_codes THEN
            UPDATE public.voucher_codes v SET status = 'reserved', issuance_id = claim.issuance_id
              FROM unnest(code_ids, new_ids) AS claim(code_id, issuance_id)
             WHERE v.tenant_id = t AND v.id = claim.code_id;
        END IF;
        FOR lo IN 1..wanted BY write_chunk LOOP
            hi := least(lo + write_chunk - 1, wanted);
            EXECUTE 'INSERT INTO public.ledger_entries (tenant_id, budget_id, entry_type, amount, currency,
                                                        ref_type, ref_id, batch_id)
                     VALUES ' || loyalty.numbered_rows(
                         '($1, $2, ''reserve'', $3, $4, ''issuance'', $5[k], $6)', hi - lo + 1)
                USING t, r.budget_id, r.cost_amount, r.currency, new_ids[lo:hi], batch;
        END LOOP;

        IF r.global_limit IS NOT NULL THEN
            UPDATE public.rules SET issued_count = issued_count + wanted
             WHERE tenant_id = t AND id = p_rule_id AND issued_count + wanted <= global_limit;
            IF NOT FOUND THEN
                PERFORM loyalty.refuse('limit_reached',
                    format('rule %s cannot issue %s more within its global limit', p_rule_id, wanted),
                    '{"scope": "global"}');
            END IF;
        END IF;
        UPDATE public.budgets SET reserved = reserved + r.cost_amount * wanted
         WHERE tenant_id = t AND id = r.budget_id
           AND reserved + spent + r.cost_amount * wanted <= hard_cap;
        IF NOT FOUND THEN
            PERFORM loyalty.refuse('budget_exhausted',
                format('budget %s cannot cover %s issuances', r.budget_id, wanted));
        END IF;
    END IF;

    RETURN (
        SELECT jsonb_build_object('applied', NOT refused, 'items', coalesce(jsonb_agg(
                   jsonb_build_object('customer_id', x.customer_id, 'verdict', x.verdict,
                                      'refusal', x.refusal,
                                      'issuance_id', CASE WHEN x.issued THEN x.id ELSE x.prior_id END,
                                      'voucher_code', CASE WHEN x.issued THEN codes[x.k] ELSE x.prior_code END)
                   ORDER BY x.n), '[]'))
          FROM (SELECT u.*, u.verdict = 'issue' AND NOT refused AS issued,
                       count(*) FILTER (WHERE u.verdict = 'issue') OVER (ORDER BY u.n) AS k
                  FROM unnest(p_customer_ids, p_ids, verdicts, refusals, prior_ids, prior_codes)
                       WITH ORDINALITY AS u(customer_id, id, verdict, refusal, prior_id, prior_code, n)) x);
END
$$;

-- Redeeming moves the issuance's reservation into spent. Redeeming twice is
-- a replay, not an error.
CREATE FUNCTION loyalty.redeem_issuance(p_tenant_id uuid, p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    i public.issuances%ROWTYPE;
BEGIN
    PERFORM loyalty.settle_pending_reservations();
    SELECT * INTO i FROM public.issuances WHERE tenant_id = t AND id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('issuance_not_found', format('issuance %s not found', p_id));
    ELSIF i.status = 'redeemed' THEN
        RETURN loyalty.issuance_json(t, p_id, true);
    ELSIF i.status <> 'issued' THEN
        PERFORM loyalty.refuse('issuance_not_issued', format('issuance %s is %s', p_id, i.status),
            jsonb_build_object('status', i.status));
    ELSIF i.expires_at <= now() THEN
        PERFORM loyalty.refuse('issuance_expired',
            format('issuance %s expired at %s', p_id, i.expires_at));
    END IF;
    UPDATE public.issuances SET status = 'redeemed', redeemed_at = now() WHERE tenant_id = t AND id = p_id;
    -- A redeemed code was in the customer's hands: delivered, so neither a
    -- reversal followed by a cancel nor anything else puts it back in the pool.
    UPDATE public.voucher_codes SET status = 'issued', issued_at = now()
     WHERE tenant_id = t AND id = i.voucher_code_id AND status = 'reserved';
    UPDATE public.budgets SET reserved = reserved - i.cost_amount, spent = spent + i.cost_amount
     WHERE tenant_id = t AND id = i.budget_id;
    INSERT INTO public.ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id,
                                       reopened)
    VALUES (t, i.budget_id, 'commit', i.cost_amount, i.currency, 'issuance', p_id, i.reversed_at IS NOT NULL);
    RETURN loyalty.issuance_json(t, p_id, false);
END
$$;

-- Redemption at a till, by the code alone: the code names one voucher in its
-- tenant, and the issuance that handed it out keeps its voucher_code_id
-- after expiry, so an expired scan is still traced to it. A second scan is
-- refused (already_redeemed), not replayed: a till must not accept one
-- voucher twice. Returns the issuance and its customer.
CREATE FUNCTION loyalty.redeem_code(p_tenant_id uuid, p_code text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    i public.issuances%ROWTYPE;
BEGIN
    SELECT iss.* INTO i
      FROM public.voucher_codes v
      JOIN public.issuances iss ON iss.tenant_id = v.tenant_id AND iss.voucher_code_id = v.id
     WHERE v.tenant_id = t AND v.code = p_code
       FOR UPDATE OF iss;
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('code_not_found', 'no voucher handed out under this code');
    ELSIF i.status = 'redeemed' THEN
        PERFORM loyalty.refuse('already_redeemed', format('voucher redeemed at %s', i.redeemed_at),
            jsonb_build_object('redeemed_at', i.redeemed_at));
    ELSIF i.status = 'expired' THEN
        PERFORM loyalty.refuse('issuance_expired', format('voucher expired at %s', i.expires_at));
    END IF;
    RETURN jsonb_build_object(
        'issuance', loyalty.redeem_issuance(t, i.id),
        'customer', (SELECT to_jsonb(c) FROM public.customers c WHERE c.tenant_id = t AND c.id = i.customer_id));
END
$$;

-- Ends issued rewards without redemption: releases their reservations and
-- stops cancelled ones counting towards a global limit. A cancelled
-- issuance's undelivered code (still 'reserved') goes back to the pool; every
-- other code is retired, since an expired reward's code may have been seen.
--
-- Lock order: codes, then (after settling this transaction's pending
-- reservations) limited rules, then budgets, each in id order. A concurrent
-- issue's SKIP LOCKED claim can leave a lock on a code it then skipped (READ
-- COMMITTED re-checks a row that changed under it, and keeps the lock when
-- the row no longer matches), and that issue takes the budget at commit:
-- codes before budgets on every path means the two wait, never deadlock.
CREATE FUNCTION loyalty.end_issuances(p_tenant_id uuid, p_ids uuid[], p_status text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    ended uuid[];
    ruled uuid[];
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('cancelled', 'expired') THEN
        PERFORM loyalty.refuse('invalid_argument', format('cannot end issuances as %s', p_status),
            jsonb_build_object('argument', 'status', 'reason', 'must be cancelled or expired'));
    END IF;
    SELECT array_agg(id) INTO ended FROM (
        SELECT id FROM public.issuances
         WHERE tenant_id = t AND id = ANY (p_ids) AND status IN ('issued', 'reserved')
         ORDER BY id
           FOR UPDATE
    ) s;
    IF ended IS NULL THEN
        RETURN 0;
    END IF;
    -- The rules' locks, shared, before anything changes: a commit-time
    -- recount of a rule (which takes its lock) then waits for this end
    -- instead of counting an issuance about to stop counting.
    SELECT array_agg(DISTINCT rule_id ORDER BY rule_id) INTO ruled
      FROM public.issuances WHERE tenant_id = t AND id = ANY (ended);
    PERFORM pg_advisory_xact_lock_shared(loyalty.rule_lock(r)) FROM unnest(ruled) AS r;
    -- A code back in the pool belongs to whoever gets it next. Which codes
    -- went back is read from the update itself, which waits for a
    -- concurrent delivery of the code: a snapshot read would miss one that
    -- committed meanwhile, and unlink a delivered code from its issuance.
    -- Only a cancel returns codes, and it ends one issuance, so the array
    -- stays short.
    WITH codes AS (
        UPDATE public.voucher_codes
           SET status = CASE WHEN p_status = 'cancelled' AND status = 'reserved'
                             THEN 'available' ELSE 'invalid' END,
               issuance_id = NULL
         WHERE tenant_id = t AND issuance_id = ANY (ended)
        RETURNING id, status
    )
    UPDATE public.issuances i
       SET status = p_status,
           voucher_code_id = CASE WHEN i.voucher_code_id = ANY (ARRAY(SELECT id FROM codes
                                                                      WHERE status = 'available'))
                                  THEN NULL ELSE i.voucher_code_id END
     WHERE i.tenant_id = t AND i.id = ANY (ended);
    PERFORM loyalty.settle_pending_reservations();
    IF p_status = 'cancelled' THEN
        PERFORM 1 FROM public.rules
         WHERE tenant_id = t AND global_limit IS NOT NULL
           AND id IN (SELECT rule_id FROM public.issuances WHERE tenant_id = t AND id = ANY (ended))
         ORDER BY id
           FOR NO KEY UPDATE;
    END IF;
    PERFORM 1 FROM public.budgets
     WHERE tenant_id = t
       AND id IN (SELECT budget_id FROM public.issuances WHERE tenant_id = t AND id = ANY (ended))
     ORDER BY id
       FOR NO KEY UPDATE;
    IF p_status = 'cancelled' THEN
        UPDATE public.rules ru SET issued_count = ru.issued_count - s.n
          FROM (SELECT rule_id, count(*) AS n FROM public.issuances
                 WHERE tenant_id = t AND id = ANY (ended) GROUP BY rule_id) s
         WHERE ru.tenant_id = t AND ru.id = s.rule_id AND ru.global_limit IS NOT NULL;
    END IF;
    UPDATE public.budgets b SET reserved = b.reserved - s.total
      FROM (SELECT budget_id, sum(cost_amount) AS total FROM public.issuances
             WHERE tenant_id = t AND id = ANY (ended) GROUP BY budget_id) s
     WHERE b.tenant_id = t AND b.id = s.budget_id;
    INSERT INTO public.ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id,
                                       reopened)
    SELECT t, budget_id, 'release', cost_amount, currency, 'issuance', id, reversed_at IS NOT NULL
      FROM public.issuances WHERE tenant_id = t AND id = ANY (ended);
    RETURN cardinality(ended);
END
$$;

-- Cancelling twice is a replay; a redeemed or expired issuance stays as it is.
CREATE FUNCTION loyalty.cancel_issuance(p_tenant_id uuid, p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    current_status text;
BEGIN
    SELECT status INTO current_status FROM public.issuances WHERE tenant_id = t AND id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('issuance_not_found', format('issuance %s not found', p_id));
    ELSIF current_status = 'cancelled' THEN
        RETURN loyalty.issuance_json(t, p_id, true);
    ELSIF current_status <> 'issued' THEN
        PERFORM loyalty.refuse('issuance_not_issued',
            format('issuance %s is %s', p_id, current_status),
            jsonb_build_object('status', current_status));
    END IF;
    PERFORM loyalty.end_issuances(t, ARRAY[p_id], 'cancelled');
    RETURN loyalty.issuance_json(t, p_id, false);
END
$$;

-- Expires up to p_batch issued rewards whose expiry is at or before p_now,
-- skipping rows another caller holds; returns how many it expired.
CREATE FUNCTION loyalty.expire_issuances(p_tenant_id uuid, p_now timestamptz, p_batch integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    due uuid[];
    lapsed uuid[];
BEGIN
    SELECT array_agg(id) INTO due FROM (
        SELECT id FROM public.issuances
         WHERE tenant_id = t AND status = 'issued' AND expires_at <= p_now
         ORDER BY expires_at
         LIMIT p_batch
           FOR UPDATE SKIP LOCKED
    ) s;
    -- One end_issuances per call: a second would lock codes and rules after
    -- the first locked budgets, against the lock order. The caller calls
    -- again until nothing is left.
    IF due IS NOT NULL THEN
        RETURN loyalty.end_issuances(t, due, 'expired');
    END IF;
    -- Holds not settled in time are voided: the checkout never completed.
    -- By the database's clock, the one confirm_hold judges them by.
    SELECT array_agg(id) INTO lapsed FROM (
        SELECT id FROM public.issuances
         WHERE tenant_id = t AND status = 'reserved' AND hold_expires_at <= least(p_now, now())
         ORDER BY hold_expires_at
         LIMIT p_batch
           FOR UPDATE SKIP LOCKED
    ) s;
    IF lapsed IS NOT NULL THEN
        RETURN loyalty.end_issuances(t, lapsed, 'cancelled');
    END IF;
    RETURN 0;
END
$$;

-- A hold for a checkout: issued like issue_reward (same checks, limits,
-- code and budget reservation), but 'reserved' until confirm_hold or
-- void_hold settles it, and voided by expire_issuances once p_hold_for has
-- passed. Not redeemable until confirmed.
CREATE FUNCTION loyalty.hold_reward(
    p_tenant_id uuid,
    p_id uuid,
    p_rule_id uuid,
    p_customer_id uuid,
    p_idempotency_key text,
    p_expires_at timestamptz,
    p_hold_for interval
) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    issued jsonb;
BEGIN
    issued := loyalty.issue_reward(t, p_id, p_rule_id, p_customer_id, p_idempotency_key, p_expires_at);
    IF (issued ->> 'replayed')::boolean THEN
        RETURN issued;
    END IF;
    -- The database's clock, like every other deadline of the money path.
    UPDATE public.issuances SET status = 'reserved', hold_expires_at = now() + p_hold_for
     WHERE tenant_id = t AND id = p_id;
    RETURN loyalty.issuance_json(t, p_id, false);
END
$$;

-- Settles a hold: 'confirm' makes it an issued reward, 'void' cancels it
-- (its cost released, its code back in the pool). Settling it the same way
-- again is a replay; a hold past its time can no longer be confirmed.
CREATE FUNCTION loyalty.settle_hold(p_tenant_id uuid, p_id uuid, p_outcome text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    i public.issuances%ROWTYPE;
BEGIN
    IF p_outcome IS NULL OR p_outcome NOT IN ('confirm', 'void') THEN
        PERFORM loyalty.refuse('invalid_argument', format('cannot settle a hold with %s', p_outcome),
            jsonb_build_object('argument', 'outcome', 'reason', 'must be confirm or void'));
    END IF;
    PERFORM loyalty.settle_pending_reservations();
    SELECT * INTO i FROM public.issuances WHERE tenant_id = t AND id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('issuance_not_found', format('issuance %s not found', p_id));
    ELSIF i.hold_expires_at IS NOT NULL
          AND ((p_outcome = 'confirm' AND i.status = 'issued')
               OR (p_outcome = 'void' AND i.status = 'cancelled')) THEN
        RETURN loyalty.issuance_json(t, p_id, true);
    ELSIF i.status <> 'reserved' THEN
        PERFORM loyalty.refuse('issuance_not_issued', format('issuance %s is %s', p_id, i.status),
            jsonb_build_object('status', i.status));
    ELSIF p_outcome = 'confirm' AND i.hold_expires_at <= now() THEN
        PERFORM loyalty.refuse('hold_expired', format('the hold on %s lapsed at %s', p_id, i.hold_expires_at));
    END IF;
    IF p_outcome = 'confirm' THEN
        UPDATE public.issuances SET status = 'issued' WHERE tenant_id = t AND id = p_id;
    ELSE
        PERFORM loyalty.end_issuances(t, ARRAY[p_id], 'cancelled');
    END IF;
    RETURN loyalty.issuance_json(t, p_id, false);
END
$$;

-- Undoes a redemption within p_window of it (a refund, a mistaken scan):
-- the issuance is issued again, its cost moves back from spent to reserved,
-- booked as a 'reversal' entry. Once per issuance; reversing the same
-- redemption again is a replay.
CREATE FUNCTION loyalty.reverse_redemption(p_tenant_id uuid, p_id uuid, p_window interval) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := loyalty.tenant_argument(p_tenant_id);
    i public.issuances%ROWTYPE;
BEGIN
    PERFORM loyalty.settle_pending_reservations();
    SELECT * INTO i FROM public.issuances WHERE tenant_id = t AND id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM loyalty.refuse('issuance_not_found', format('issuance %s not found', p_id));
    ELSIF i.status = 'issued' AND i.reversed_at IS NOT NULL THEN
        RETURN loyalty.issuance_json(t, p_id, true);
    ELSIF i.status <> 'redeemed' THEN
        PERFORM loyalty.refuse('not_redeemed', format('issuance %s is %s', p_id, i.status),
            jsonb_build_object('status', i.status));
    ELSIF i.reversed_at IS NOT NULL THEN
        PERFORM loyalty.refuse('already_reversed',
            format('a redemption of issuance %s was reversed at %s', p_id, i.reversed_at));
    ELSIF i.redeemed_at + p_window < now() THEN
        PERFORM loyalty.refuse('reversal_window_closed',
            format('issuance %s was redeemed at %s, before the window', p_id, i.redeemed_at),
            jsonb_build_object('redeemed_at', i.redeemed_at));
    END IF;
    UPDATE public.issuances SET status = 'issued', redeemed_at = NULL, reversed_at = now()
     WHERE tenant_id = t AND id = p_id;
    UPDATE public.budgets SET spent = spent - i.cost_amount, reserved = reserved + i.cost_amount
     WHERE tenant_id = t AND id = i.budget_id;
    INSERT INTO public.ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    VALUES (t, i.budget_id, 'reversal', i.cost_amount, i.currency, 'issuance', p_id);
    RETURN loyalty.issuance_json(t, p_id, false);
END
$$;
