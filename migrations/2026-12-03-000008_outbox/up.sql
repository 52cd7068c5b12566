-- A transactional outbox: a message written in the same transaction as the
-- work it reports (an issuance and its code, say) exists exactly when that
-- work committed. Workers claim due messages with SKIP LOCKED and a lease,
-- send them, and mark them delivered; a worker that dies mid-send leaves
-- the message to be claimed again when its lease ends, so delivery is at
-- least once, and message_key lets the receiver drop repeats.
CREATE TABLE outbox_messages (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    topic         text NOT NULL CHECK (char_length(topic) BETWEEN 1 AND 100),
    message_key   text NOT NULL CHECK (char_length(message_key) BETWEEN 1 AND 200),
    payload       jsonb NOT NULL CHECK (is_json_object(payload)),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- When the message may next be claimed: now for a new one, the end of
    -- the lease for a claimed one, later for one whose send failed.
    available_at  timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    delivered_at  timestamptz,
    last_error    text CHECK (char_length(last_error) <= 1000),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT outbox_messages_tenant_key UNIQUE (tenant_id, message_key)
);
CREATE INDEX outbox_messages_due_idx ON outbox_messages (tenant_id, available_at)
    WHERE delivered_at IS NULL;
SELECT isolate_by_tenant('outbox_messages');
GRANT SELECT, INSERT, UPDATE (available_at, attempts, delivered_at, last_error)
    ON outbox_messages TO loyalty_app;
