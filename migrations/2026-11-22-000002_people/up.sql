CREATE TABLE staff_users (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    email       text NOT NULL CHECK (char_length(email) <= 254 AND email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
    full_name   text NOT NULL CHECK (char_length(full_name) BETWEEN 1 AND 200),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'staff', 'viewer')),
    pwd_hash    text NOT NULL CHECK (char_length(pwd_hash) BETWEEN 1 AND 1024),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX staff_users_tenant_email_key ON staff_users (tenant_id, lower(email));
SELECT isolate_by_tenant('staff_users');
GRANT SELECT, INSERT, UPDATE, DELETE ON staff_users TO loyalty_app;

CREATE TABLE customers (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    phone_e164  text NOT NULL CHECK (is_e164(phone_e164)),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked', 'erased')),
    attributes  jsonb NOT NULL DEFAULT '{}' CHECK (is_json_object(attributes)),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT customers_tenant_phone_key UNIQUE (tenant_id, phone_e164)
);
SELECT isolate_by_tenant('customers');
GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO loyalty_app;

-- Append-only history: the latest row per (customer, channel, purpose) wins.
CREATE TABLE consents (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    customer_id  uuid NOT NULL,
    channel      text NOT NULL CHECK (channel IN ('whatsapp', 'sms', 'email', 'push')),
    purpose      text NOT NULL CHECK (purpose IN ('marketing', 'transactional', 'analytics')),
    granted      boolean NOT NULL,
    occurred_at  timestamptz NOT NULL,
    source       text CHECK (char_length(source) <= 100),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);
CREATE INDEX consents_latest_idx
    ON consents (tenant_id, customer_id, channel, purpose, occurred_at DESC);
SELECT isolate_by_tenant('consents');
GRANT SELECT, INSERT ON consents TO loyalty_app;
