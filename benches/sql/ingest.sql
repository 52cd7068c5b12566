-- The raw-SQL floor for the highest-volume write, an event ingested and
-- matched against the tenant's rules (the source documents'
-- benchmark_queries.sql), through the tenant guard: BEGIN with the role, the
-- tenant and the tenant check in one round trip, the insert, the rule match
-- with its conditions, COMMIT. The same statements the crate sends for
-- tx.events().ingest() and tx.rules().match_event(). Customer ids are
-- md5(n)::uuid, as benches/ingest.rs creates them.
-- Run with: pgbench -n -M simple -D tenant=<uuid> -D proof=<hex> -f benches/sql/ingest.sql
\set c random(1, 1000)
\set amount random(1, 100)
BEGIN \; SELECT set_config('search_path', 'public, pg_temp', true), set_config('role', 'loyalty_app', true), set_config('statement_timeout', '30000', true), set_config('lock_timeout', '5000', true), set_config('idle_in_transaction_session_timeout', '60000', true) \; SELECT loyalty.enter_tenant(':tenant', ':proof');
INSERT INTO events (tenant_id, id, customer_id, event_type, properties, occurred_at, source, idempotency_key) VALUES (':tenant', gen_random_uuid(), md5(:c::text)::uuid, 'purchase', jsonb_build_object('amount', :amount, 'day', 'sat'), now(), 'bench', gen_random_uuid()::text) ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING *;
SELECT r.* FROM rules r WHERE r.tenant_id = ':tenant' AND r.event_type = 'purchase' AND r.active AND r.campaign_id IN (SELECT c.id FROM campaigns c WHERE c.tenant_id = ':tenant' AND c.status = 'active' AND (c.start_at IS NULL OR c.start_at <= now()) AND (c.end_at IS NULL OR c.end_at >= now())) AND loyalty.conditions_hold(r.conditions, jsonb_build_object('amount', :amount, 'day', 'sat')) ORDER BY r.created_at, r.id;
COMMIT;
