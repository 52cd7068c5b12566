-- The loyalty_app role is cluster-wide and other databases may use it, so it
-- is left in place; everything this database granted it goes with the objects.
DROP FUNCTION assert_tenant_active();
DROP TABLE tenants;
DROP FUNCTION isolate_by_tenant(regclass);
DROP FUNCTION is_json_object(jsonb);
DROP FUNCTION is_e164(text);
DROP FUNCTION is_iso4217(text);
DROP FUNCTION set_timestamps();
DROP FUNCTION current_tenant_id();
DO $$
BEGIN
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM loyalty_app', current_schema());
END
$$;
