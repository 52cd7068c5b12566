-- One row in every tenant-owned table loyalty_app may write, for the tenant
-- in context. Run as loyalty_app inside a tenant guard, so RLS itself checks
-- every insert. The money rows (a ledger entry, an issuance) only the SQL
-- layer may write: fixture_money.sql adds them, as the table owner.
DO $$
DECLARE
    t   uuid := current_tenant_id();
    tag text := left(t::text, 8);
    customer uuid;
    reward   uuid;
    budget   uuid;
    campaign uuid;
    rule     uuid;
BEGIN
    INSERT INTO staff_users (tenant_id, email, full_name, role, pwd_hash)
        VALUES (t, 'owner-' || tag || '@example.test', 'Owner', 'owner', 'argon2id$fixture');
    INSERT INTO customers (tenant_id, phone_e164)
        VALUES (t, '+1555' || lpad((abs(hashtext(tag)) % 10000000)::text, 7, '0'))
        RETURNING id INTO customer;
    INSERT INTO consents (tenant_id, customer_id, channel, purpose, granted, occurred_at)
        VALUES (t, customer, 'sms', 'marketing', true, now());
    INSERT INTO reward_catalog (tenant_id, name, type, cost_amount, currency, uses_codes)
        VALUES (t, 'Coffee', 'voucher', 5, 'USD', true)
        RETURNING id INTO reward;
    INSERT INTO budgets (tenant_id, name, currency)
        VALUES (t, 'Main', 'USD')
        RETURNING id INTO budget;
    INSERT INTO campaigns (tenant_id, name, budget_id, status, start_at, end_at)
        VALUES (t, 'Launch', budget, 'active', now() - interval '1 day', now() + interval '1 day')
        RETURNING id INTO campaign;
    INSERT INTO rules (tenant_id, campaign_id, name, event_type, reward_id, per_customer_limit)
        VALUES (t, campaign, 'First purchase', 'purchase', reward, 1)
        RETURNING id INTO rule;
    INSERT INTO voucher_codes (tenant_id, reward_id, code)
        VALUES (t, reward, 'CODE-' || tag);
    INSERT INTO events (tenant_id, customer_id, event_type, properties, occurred_at, source, idempotency_key)
        VALUES (t, customer, 'purchase', '{"amount": 50}', now(), 'api', 'evt-' || tag);
    INSERT INTO wa_sessions (tenant_id, wa_id, customer_id, phone_e164, state)
        VALUES (t, 'wa-' || tag, customer, '+15550000000', 'menu');
    INSERT INTO audit_logs (tenant_id, actor_type, action, resource_type, resource_id, ip_address)
        VALUES (t, 'system', 'fixture.created', 'tenant', t, '127.0.0.1');
    INSERT INTO outbox_messages (tenant_id, id, topic, message_key, payload)
        VALUES (t, gen_random_uuid(), 'fixture.sent', 'msg-' || tag, '{"to": "+15550000000"}');
END
$$;
