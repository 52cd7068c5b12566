-- The raw-SQL floor for one issuance through the tenant guard: BEGIN with the
-- role, the tenant and the tenant check in one round trip, the issuance,
-- COMMIT. Customer ids are md5(n)::uuid, as benches/issuance.rs creates them.
-- Run with: pgbench -n -M simple -D tenant=<uuid> -D proof=<hex> -D rule=<uuid> -f benches/sql/issue.sql
\set c random(1, 1000)
BEGIN \; SELECT set_config('search_path', 'public, pg_temp', true), set_config('role', 'loyalty_app', true), set_config('statement_timeout', '30000', true), set_config('lock_timeout', '5000', true), set_config('idle_in_transaction_session_timeout', '60000', true) \; SELECT loyalty.enter_tenant(':tenant', ':proof');
SELECT loyalty.issue_reward(':tenant', gen_random_uuid(), ':rule', md5(:c::text)::uuid, gen_random_uuid()::text, NULL);
COMMIT;
