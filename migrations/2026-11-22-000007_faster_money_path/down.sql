DROP TRIGGER ledger_entries_reserve_at_commit ON ledger_entries;
DROP FUNCTION reserve_issuance_at_commit();
DROP FUNCTION settle_pending_reservations();

DROP INDEX issuances_status_expires_idx;
CREATE INDEX issuances_status_expires_idx ON issuances (tenant_id, status, expires_at)
    WHERE status IN ('issued', 'reserved');

-- Restores the definitions of 2026-11-22-000001 and 2026-11-22-000006.

CREATE OR REPLACE FUNCTION is_iso4217(code text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT code = ANY ('{AED,AFN,ALL,AMD,ANG,AOA,ARS,AUD,AWG,AZN,BAM,BBD,BDT,BGN,BHD,BIF,BMD,BND,BOB,BRL,BSD,BTN,BWP,BYN,BZD,CAD,CDF,CHF,CLP,CNY,COP,CRC,CUP,CVE,CZK,DJF,DKK,DOP,DZD,EGP,ERN,ETB,EUR,FJD,FKP,GBP,GEL,GHS,GIP,GMD,GNF,GTQ,GYD,HKD,HNL,HTG,HUF,IDR,ILS,INR,IQD,IRR,ISK,JMD,JOD,JPY,KES,KGS,KHR,KMF,KPW,KRW,KWD,KYD,KZT,LAK,LBP,LKR,LRD,LSL,LYD,MAD,MDL,MGA,MKD,MMK,MNT,MOP,MRU,MUR,MVR,MWK,MXN,MYR,MZN,NAD,NGN,NIO,NOK,NPR,NZD,OMR,PAB,PEN,PGK,PHP,PKR,PLN,PYG,QAR,RON,RSD,RUB,RWF,SAR,SBD,SCR,SDG,SEK,SGD,SHP,SLE,SOS,SRD,SSP,STN,SVC,SYP,SZL,THB,TJS,TMT,TND,TOP,TRY,TTD,TWD,TZS,UAH,UGX,USD,UYU,UZS,VES,VND,VUV,WST,XAF,XCD,XOF,XPF,YER,ZAR,ZMW,ZWL}'::text[]) $$;

CREATE OR REPLACE FUNCTION issuance_json(p_id uuid, p_replayed boolean) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT to_jsonb(i) || jsonb_build_object(
               'cost_amount', i.cost_amount::text,
               'voucher_code', v.code,
               'replayed', p_replayed)
      FROM issuances i
      LEFT JOIN voucher_codes v ON v.tenant_id = i.tenant_id AND v.id = i.voucher_code_id
     WHERE i.tenant_id = current_tenant_id() AND i.id = p_id
$$;

CREATE OR REPLACE FUNCTION batch_answer(p_applied boolean, p_items jsonb) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object('applied', p_applied, 'items', coalesce(jsonb_agg(
               jsonb_build_object('customer_id', x.customer_id, 'verdict', x.verdict,
                                  'issuance_id', i.id, 'voucher_code', v.code)
               ORDER BY x.n), '[]'))
      FROM jsonb_to_recordset(p_items) AS x(n bigint, customer_id uuid, idempotency_key text, verdict text)
      LEFT JOIN issuances i
        ON i.tenant_id = current_tenant_id() AND i.idempotency_key = x.idempotency_key
      LEFT JOIN voucher_codes v ON v.tenant_id = i.tenant_id AND v.id = i.voucher_code_id
$$;

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
    items jsonb;
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

    WITH input AS (
        SELECT x.customer_id, x.idempotency_key, x.id, x.n
          FROM unnest(p_customer_ids, p_idempotency_keys, p_ids) WITH ORDINALITY
               AS x(customer_id, idempotency_key, id, n)
    ), known AS (
        SELECT input.n, i.rule_id = p_rule_id AND i.customer_id = input.customer_id AS same
          FROM input
          JOIN issuances i ON i.tenant_id = t AND i.idempotency_key = input.idempotency_key
    ), fresh AS (
        SELECT input.*, row_number() OVER (PARTITION BY input.customer_id ORDER BY input.n) AS nth
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
        SELECT input.n, input.customer_id, input.idempotency_key, input.id,
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
    SELECT jsonb_agg(jsonb_build_object('n', n, 'customer_id', customer_id,
                                        'idempotency_key', idempotency_key, 'verdict', verdict)
                     ORDER BY n),
           bool_or(verdict NOT IN ('issue', 'replayed')),
           count(*) FILTER (WHERE verdict = 'issue')
      INTO items, refused, wanted
      FROM judged;
    IF refused OR wanted = 0 THEN
        RETURN batch_answer(NOT refused, items);
    END IF;

    -- Codes, issuances and ledger entries in one statement; the issuances'
    -- idempotency keys were checked above, so every row must go in.
    WITH fresh AS (
        SELECT x.n, x.customer_id, x.idempotency_key, x.id, row_number() OVER (ORDER BY x.n) AS k
          FROM unnest(p_customer_ids, p_idempotency_keys, p_ids) WITH ORDINALITY
               AS x(customer_id, idempotency_key, id, n)
          JOIN jsonb_to_recordset(items) AS j(n bigint, verdict text) ON j.n = x.n
         WHERE j.verdict = 'issue'
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

    RETURN batch_answer(true, items);
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
    -- Everything but the hot rows is done, the answer included, so their
    -- locks are held for as short a time as possible.
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
    UPDATE budgets SET reserved = reserved + r.cost_amount
     WHERE tenant_id = t AND id = r.budget_id AND reserved + spent + r.cost_amount <= hard_cap;
    IF NOT FOUND THEN
        PERFORM loyalty_refuse('budget_exhausted', format('budget %s is exhausted', r.budget_id));
    END IF;
    RETURN answer;
END
$$;

CREATE OR REPLACE FUNCTION redeem_issuance(p_id uuid) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := current_tenant_id();
    i issuances%ROWTYPE;
BEGIN
    SELECT * INTO i FROM issuances WHERE tenant_id = t AND id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM loyalty_refuse('not_found', format('issuance %s not found', p_id));
    ELSIF i.status = 'redeemed' THEN
        RETURN issuance_json(p_id, true);
    ELSIF i.status <> 'issued' THEN
        PERFORM loyalty_refuse('invalid_state', format('issuance %s is %s', p_id, i.status));
    ELSIF i.expires_at <= now() THEN
        PERFORM loyalty_refuse('invalid_state', format('issuance %s expired at %s', p_id, i.expires_at));
    END IF;
    UPDATE issuances SET status = 'redeemed', redeemed_at = now() WHERE tenant_id = t AND id = p_id;
    UPDATE budgets SET reserved = reserved - i.cost_amount, spent = spent + i.cost_amount
     WHERE tenant_id = t AND id = i.budget_id;
    INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    VALUES (t, i.budget_id, 'commit', i.cost_amount, i.currency, 'issuance', p_id);
    RETURN issuance_json(p_id, false);
END
$$;

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

CREATE OR REPLACE FUNCTION move_budget(
    p_budget_id uuid,
    p_entry_type text,
    p_amount numeric,
    p_ref_type text,
    p_ref_id uuid
) RETURNS TABLE (outcome text, hard_cap numeric, reserved numeric, spent numeric)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    t uuid := current_tenant_id();
    b budgets%ROWTYPE;
    booked numeric;
    booked_on uuid;
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM loyalty_refuse('invalid_amount', 'amount must be positive');
    END IF;
    IF p_ref_type = 'issuance' THEN
        -- Issuances book and settle their own entries; a direct movement
        -- would leave an issued reward without its reservation.
        PERFORM loyalty_refuse('invalid_state', 'ref_type issuance is reserved for issuances');
    END IF;
    SELECT * INTO b FROM budgets WHERE tenant_id = t AND id = p_budget_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing', NULL::numeric, NULL::numeric, NULL::numeric;
        RETURN;
    END IF;
    SELECT amount, budget_id INTO booked, booked_on FROM ledger_entries
     WHERE tenant_id = t AND entry_type = p_entry_type AND ref_type = p_ref_type AND ref_id = p_ref_id;
    IF FOUND THEN
        RETURN QUERY SELECT CASE WHEN booked = p_amount AND booked_on = p_budget_id THEN 'replayed'
                                 ELSE 'conflicting_replay' END,
                            b.hard_cap, b.reserved, b.spent;
        RETURN;
    END IF;
    IF p_entry_type IN ('release', 'commit') THEN
        IF NOT EXISTS (SELECT 1 FROM ledger_entries
                        WHERE tenant_id = t AND budget_id = p_budget_id AND entry_type = 'reserve'
                          AND ref_type = p_ref_type AND ref_id = p_ref_id AND amount = p_amount) THEN
            RETURN QUERY SELECT 'not_reserved', b.hard_cap, b.reserved, b.spent;
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM ledger_entries
                    WHERE tenant_id = t AND entry_type IN ('release', 'commit')
                      AND ref_type = p_ref_type AND ref_id = p_ref_id) THEN
            RETURN QUERY SELECT 'already_settled', b.hard_cap, b.reserved, b.spent;
            RETURN;
        END IF;
    ELSIF p_entry_type = 'reserve' AND b.reserved + b.spent + p_amount > b.hard_cap THEN
        RETURN QUERY SELECT 'exhausted', b.hard_cap, b.reserved, b.spent;
        RETURN;
    END IF;
    UPDATE budgets SET
        reserved = reserved + CASE p_entry_type WHEN 'reserve' THEN p_amount
                                                WHEN 'topup' THEN 0 ELSE -p_amount END,
        spent = spent + CASE p_entry_type WHEN 'commit' THEN p_amount ELSE 0 END,
        hard_cap = hard_cap + CASE p_entry_type WHEN 'topup' THEN p_amount ELSE 0 END
    WHERE tenant_id = t AND id = p_budget_id
    RETURNING * INTO b;
    INSERT INTO ledger_entries (tenant_id, budget_id, entry_type, amount, currency, ref_type, ref_id)
    VALUES (t, p_budget_id, p_entry_type, p_amount, b.currency, p_ref_type, p_ref_id);
    RETURN QUERY SELECT 'applied', b.hard_cap, b.reserved, b.spent;
END
$$;
