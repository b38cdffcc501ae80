-- Privacy: crypto-shredding of personal fields in append-only audit rows,
-- and the append-only record of erasures (see src/privacy/mod.rs).

-- One data key per subject. A subject is a visitor's conversation: a visitor
-- is a person before they leave contact details, and a booking may come
-- first. The key is sealed by the keyring, bound to its row. Deleting the
-- row (an erasure, or the conversation's own deletion) makes every audit
-- field sealed under it unreadable: the audit row stays, its personal
-- content is gone.
CREATE TABLE subject_keys (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL,
    key_sealed       bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, conversation_id),
    FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id) ON DELETE CASCADE
);
CALL agentry_isolate_by_tenant('subject_keys');

-- An action run's arguments (and an output that echoes them, a refusal's)
-- sealed under the conversation's data key; `input` keeps only their shape
-- (the argument names), `output` a form without personal data. Rows written
-- before this migration have no key and hold their input plain.
ALTER TABLE agent_action_runs
    ADD COLUMN subject_key_id uuid,
    ADD COLUMN input_sealed bytea,
    ADD COLUMN output_sealed bytea;
-- No index of its own: an erasure finds the runs by conversation (the call
-- index), and a run's insert stays as cheap as before.

-- An erased person's events keep their id and type (the delivery record
-- refers to them) but lose their payload, and are never sent again.
ALTER TABLE outbox_events ADD COLUMN erased_at timestamptz;

-- Who asked for an erasure, when, by which kind of key, and how much of
-- each kind was erased or shredded: never the key's value. Append-only like
-- the other audit tables.
CREATE TABLE privacy_erasures (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    requested_by  uuid NOT NULL,
    key_kind      text NOT NULL CHECK (key_kind IN ('lead_id', 'email', 'phone')),
    counts        jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX privacy_erasures_tenant_idx ON privacy_erasures (tenant_id, created_at);
CALL agentry_isolate_by_tenant('privacy_erasures');
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON privacy_erasures
    FOR EACH ROW EXECUTE FUNCTION agentry_refuse_audit_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON privacy_erasures
    FOR EACH STATEMENT EXECUTE FUNCTION agentry_refuse_audit_change();

-- The privacy routes' own rate-limit tier, which an operator may set per tenant.
ALTER TABLE tenant_rate_limits DROP CONSTRAINT tenant_rate_limits_tier_check;
ALTER TABLE tenant_rate_limits ADD CONSTRAINT tenant_rate_limits_tier_check
    CHECK (tier IN ('chat', 'upload', 'standard', 'provider_webhooks',
                    'widget_sessions', 'widget_messages', 'api_tokens', 'privacy'));
