-- The raw-SQL floor for one issuance through the tenant guard: BEGIN with the
-- role, the tenant and the tenant check in one round trip, the issuance,
-- COMMIT. Customer ids are md5(n)::uuid, as benches/issuance.rs creates them.
-- Run with: pgbench -n -M simple -D tenant=<uuid> -D proof=<hex> -D rule=<uuid> -f benches/sql/issue.sql
\set c random(1, 1000)
BEGIN \; SELECT set_config('role', 'loyalty_app', true), set_config('app.tenant_id', ':tenant', true), set_config('app.tenant_proof', ':proof', true) \; SELECT loyalty.assert_tenant_active();
SELECT loyalty.issue_reward(gen_random_uuid(), ':rule', md5(:c::text)::uuid, gen_random_uuid()::text, NULL);
COMMIT;
