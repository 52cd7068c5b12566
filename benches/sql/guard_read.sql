-- The raw-SQL floor for one guarded point read, the same work the guard does:
-- BEGIN, the search path, the role, the tenant with its proof and the tenant
-- check in one round trip, then the read the repository sends (row-level
-- security adds the tenant), then COMMIT.
-- Run with: pgbench -n -M simple -D tenant=<uuid> -D proof=<hex> -f benches/sql/guard_read.sql
\set n random(1, 10000)
BEGIN \; SELECT set_config('search_path', 'public, pg_temp', true), set_config('role', 'loyalty_app', true), set_config('statement_timeout', '30000', true), set_config('lock_timeout', '5000', true), set_config('idle_in_transaction_session_timeout', '60000', true) \; SELECT loyalty.enter_tenant(':tenant', ':proof');
SELECT tenant_id, id, phone_e164, status, attributes, created_at, updated_at FROM customers WHERE phone_e164 = '+1555' || lpad(:n::text, 7, '0');
COMMIT;
