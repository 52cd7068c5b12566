-- Faster hot paths, found by profiling the issuance benchmark.
--
-- A CHECK that calls a SQL-language function is inlined and planned again by
-- every INSERT or UPDATE statement; the currency check runs in three
-- statements of every issuance. In plpgsql it is planned once per session.
CREATE OR REPLACE FUNCTION is_iso4217(code text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN code = ANY ('{AED,AFN,ALL,AMD,ANG,AOA,ARS,AUD,AWG,AZN,BAM,BBD,BDT,BGN,BHD,BIF,BMD,BND,BOB,BRL,BSD,BTN,BWP,BYN,BZD,CAD,CDF,CHF,CLP,CNY,COP,CRC,CUP,CVE,CZK,DJF,DKK,DOP,DZD,EGP,ERN,ETB,EUR,FJD,FKP,GBP,GEL,GHS,GIP,GMD,GNF,GTQ,GYD,HKD,HNL,HTG,HUF,IDR,ILS,INR,IQD,IRR,ISK,JMD,JOD,JPY,KES,KGS,KHR,KMF,KPW,KRW,KWD,KYD,KZT,LAK,LBP,LKR,LRD,LSL,LYD,MAD,MDL,MGA,MKD,MMK,MNT,MOP,MRU,MUR,MVR,MWK,MXN,MYR,MZN,NAD,NGN,NIO,NOK,NPR,NZD,OMR,PAB,PEN,PGK,PHP,PKR,PLN,PYG,QAR,RON,RSD,RUB,RWF,SAR,SBD,SCR,SDG,SEK,SGD,SHP,SLE,SOS,SRD,SSP,STN,SVC,SYP,SZL,THB,TJS,TMT,TND,TOP,TRY,TTD,TWD,TZS,UAH,UGX,USD,UYU,UZS,VES,VND,VUV,WST,XAF,XCD,XOF,XPF,YER,ZAR,ZMW,ZWL}'::text[]);
END
$$;

-- A SQL-language function that cannot be inlined is parsed and planned on
-- every call; every money-path answer goes through this one.
CREATE OR REPLACE FUNCTION issuance_json(p_id uuid, p_replayed boolean) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    RETURN (SELECT to_jsonb(i) || jsonb_build_object(
                       'cost_amount', i.cost_amount::text,
                       'voucher_code', v.code,
                       'replayed', p_replayed)
              FROM issuances i
              LEFT JOIN voucher_codes v ON v.tenant_id = i.tenant_id AND v.id = i.voucher_code_id
             WHERE i.tenant_id = current_tenant_id() AND i.id = p_id);
END
$$;

-- A batch looks its keys up one by one through the unique index. As a join,
-- the planner could hash every issuance of the tenant instead, a cost that
-- grows with the table rather than with the batch; LIMIT 1 keeps each lookup
-- a separate index probe.
CREATE OR REPLACE FUNCTION batch_answer(p_applied boolean, p_items jsonb) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object('applied', p_applied, 'items', coalesce(jsonb_agg(
               jsonb_build_object('customer_id', x.customer_id, 'verdict', x.verdict,
                                  'issuance_id', i.id, 'voucher_code', v.code)
               ORDER BY x.n), '[]'))
      FROM jsonb_to_recordset(p_items) AS x(n bigint, customer_id uuid, idempotency_key text, verdict text)
      LEFT JOIN LATERAL (
               SELECT id, tenant_id, voucher_code_id FROM issuances
                WHERE tenant_id = current_tenant_id() AND idempotency_key = x.idempotency_key
                LIMIT 1) i ON true
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
          JOIN LATERAL (
                   SELECT rule_id, customer_id FROM issuances
                    WHERE tenant_id = t AND idempotency_key = input.idempotency_key
                    LIMIT 1) i ON true
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
