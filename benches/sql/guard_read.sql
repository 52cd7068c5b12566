-- The raw-SQL floor for one guarded point read: BEGIN, the role, the tenant
-- and the tenant check in one round trip, then the read, then COMMIT.
-- Run with: pgbench -n -M simple -D tenant=<uuid> -f benches/sql/guard_read.sql
\set n random(1, 10000)
BEGIN \; SELECT set_config('role', 'loyalty_app', true), set_config('app.tenant_id', ':tenant', true) \; SELECT loyalty.assert_tenant_active();
SELECT id, phone_e164, status FROM customers WHERE tenant_id = ':tenant' AND phone_e164 = '+1555' || lpad(:n::text, 7, '0');
COMMIT;
