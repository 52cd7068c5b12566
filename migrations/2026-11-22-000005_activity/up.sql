CREATE TABLE events (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    customer_id      uuid,
    event_type       text NOT NULL CHECK (char_length(event_type) BETWEEN 1 AND 100),
    properties       jsonb NOT NULL DEFAULT '{}' CHECK (is_json_object(properties)),
    occurred_at      timestamptz NOT NULL,
    source           text NOT NULL CHECK (char_length(source) BETWEEN 1 AND 100),
    idempotency_key  text NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 200),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT events_tenant_idempotency_key UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);
CREATE INDEX events_customer_occurred_idx ON events (tenant_id, customer_id, occurred_at DESC);
CREATE INDEX events_occurred_idx ON events (tenant_id, occurred_at DESC, id);
SELECT isolate_by_tenant('events');
GRANT SELECT, INSERT ON events TO loyalty_app;

CREATE TABLE wa_sessions (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    wa_id        text NOT NULL CHECK (char_length(wa_id) BETWEEN 1 AND 64),
    customer_id  uuid,
    phone_e164   text NOT NULL CHECK (is_e164(phone_e164)),
    state        text NOT NULL CHECK (char_length(state) BETWEEN 1 AND 100),
    last_msg_at  timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT wa_sessions_tenant_wa_id_key UNIQUE (tenant_id, wa_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id)
);
CREATE INDEX wa_sessions_customer_idx ON wa_sessions (tenant_id, customer_id) WHERE customer_id IS NOT NULL;
SELECT isolate_by_tenant('wa_sessions');
GRANT SELECT, INSERT, UPDATE, DELETE ON wa_sessions TO loyalty_app;

-- Append-only.
CREATE TABLE audit_logs (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL DEFAULT gen_random_uuid(),
    actor_type     text NOT NULL CHECK (actor_type IN ('staff', 'system', 'api', 'customer')),
    actor_id       uuid,
    action         text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 100),
    resource_type  text NOT NULL CHECK (char_length(resource_type) BETWEEN 1 AND 100),
    resource_id    uuid,
    details        jsonb NOT NULL DEFAULT '{}' CHECK (is_json_object(details)),
    ip_address     inet,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_logs_created_idx ON audit_logs (tenant_id, created_at DESC, id);
CREATE INDEX audit_logs_resource_idx ON audit_logs (tenant_id, resource_type, resource_id);
SELECT isolate_by_tenant('audit_logs');
GRANT SELECT, INSERT ON audit_logs TO loyalty_app;
