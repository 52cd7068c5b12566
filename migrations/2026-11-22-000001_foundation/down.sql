-- The loyalty_app role is cluster-wide and other databases may use it, so it
-- is left in place; everything this database granted it goes with the objects.
-- The SQL layer (schema loyalty, built by Store::migrate() from sql/) stands on
-- everything the migrations create, so it goes first.
DROP SCHEMA IF EXISTS loyalty CASCADE;
DROP TABLE tenants;
DROP FUNCTION isolate_by_tenant(regclass);
DROP FUNCTION is_json_object(jsonb);
DROP FUNCTION is_e164(text);
DROP FUNCTION is_iso4217(text);
DROP FUNCTION in_platform_scope();
DROP FUNCTION current_tenant_id();
DROP SCHEMA loyalty_secret CASCADE;
DO $$
BEGIN
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM loyalty_app', current_schema());
END
$$;
