-- Foundation schema: tenants and their users, operators, agents, widgets,
-- conversations and messages, and the four append-only audit tables.
--
-- Tenant isolation: every tenant-owned table carries tenant_id and a row-level
-- security policy on the transaction-local setting app.tenant_id. The server
-- runs requests as a separate role that owns nothing and cannot bypass RLS
-- (created by the server at start, see src/db/bootstrap.rs).

-- The tenant of the current unit of work, or NULL (which matches no row).
CREATE FUNCTION agentry_current_tenant() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.tenant_id', true), '')::uuid
$$;

-- Set only inside an operator's unit of work; lets operators read tenant metadata.
CREATE FUNCTION agentry_current_operator() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('app.operator_id', true), '')::uuid
$$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = agentry_current_tenant())
    WITH CHECK (id = agentry_current_tenant());
CREATE POLICY operator_read ON tenants FOR SELECT
    USING (agentry_current_operator() IS NOT NULL);

CREATE TABLE tenant_users (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email          text NOT NULL,
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id)
);
-- Login is by email alone, so an email names one user across all tenants.
CREATE UNIQUE INDEX tenant_users_email_key ON tenant_users (lower(email));
CREATE INDEX tenant_users_tenant_idx ON tenant_users (tenant_id);

CREATE TABLE tenant_user_sessions (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, tenant_id) REFERENCES tenant_users (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX tenant_user_sessions_tenant_idx ON tenant_user_sessions (tenant_id);

-- Operators are a separate realm: no tenant, no tenant data.
CREATE TABLE operators (
    id             uuid PRIMARY KEY,
    email          text NOT NULL,
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX operators_email_key ON operators (lower(email));

CREATE TABLE operator_sessions (
    id           uuid PRIMARY KEY,
    operator_id  uuid NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    system_prompt  text NOT NULL DEFAULT '',
    profile        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id)
);
CREATE INDEX agents_tenant_idx ON agents (tenant_id, created_at);

-- Composite foreign keys (x_id, tenant_id) make a cross-tenant reference
-- impossible even if application code got it wrong.
CREATE TABLE widgets (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id         uuid NOT NULL,
    public_key       text NOT NULL UNIQUE,
    allowed_origins  text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id),
    FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX widgets_agent_idx ON widgets (tenant_id, agent_id);

CREATE TABLE conversations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id    uuid NOT NULL,
    widget_id   uuid,
    channel     text NOT NULL CHECK (channel IN ('widget', 'sms', 'voice', 'api')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    UNIQUE (id, tenant_id),
    FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX conversations_agent_idx ON conversations (tenant_id, agent_id, started_at);

-- seq orders a conversation's messages; unique, so two instances can never
-- store two messages at the same position.
CREATE TABLE agent_messages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL,
    seq              bigint NOT NULL CHECK (seq >= 0),
    role             text NOT NULL CHECK (role IN ('visitor', 'assistant', 'system', 'tool')),
    content          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, seq),
    FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX agent_messages_tenant_idx ON agent_messages (tenant_id);

-- Audit tables: append-only. They reference other rows by plain id (no
-- foreign keys), because an audit record outlives what it describes.
CREATE TABLE agent_action_runs (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    agent_id         uuid NOT NULL,
    conversation_id  uuid,
    tool             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('requested', 'succeeded', 'failed', 'rejected')),
    input            jsonb NOT NULL DEFAULT '{}'::jsonb,
    output           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_action_runs_tenant_idx ON agent_action_runs (tenant_id, created_at);

CREATE TABLE agent_usage_events (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    agent_id           uuid NOT NULL,
    conversation_id    uuid,
    kind               text NOT NULL,
    provider           text NOT NULL,
    model              text NOT NULL,
    prompt_tokens      integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens  integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_usage_events_tenant_idx ON agent_usage_events (tenant_id, created_at);

CREATE TABLE agent_webhook_deliveries (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    endpoint_id      uuid NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    attempt          integer NOT NULL CHECK (attempt >= 1),
    outcome          text NOT NULL CHECK (outcome IN ('success', 'retrying', 'failed', 'blocked')),
    response_status  integer,
    error            text,
    duration_ms      integer,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_webhook_deliveries_tenant_idx ON agent_webhook_deliveries (tenant_id, created_at);

-- Records the kind of PII removed from a voice transcript, never its value.
CREATE TABLE voice_pii_audits (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    pii_kind         text NOT NULL CHECK (pii_kind IN ('email', 'phone', 'ssn', 'card')),
    occurrences      integer NOT NULL CHECK (occurrences >= 1),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX voice_pii_audits_tenant_idx ON voice_pii_audits (tenant_id, created_at);

CREATE FUNCTION agentry_refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$
DECLARE
    audit_table text;
BEGIN
    FOREACH audit_table IN ARRAY ARRAY['agent_action_runs', 'agent_usage_events',
                                       'agent_webhook_deliveries', 'voice_pii_audits']
    LOOP
        -- Row triggers stop UPDATE/DELETE for every role, the owner included;
        -- the statement trigger stops TRUNCATE, which row triggers do not see.
        EXECUTE format('CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION agentry_refuse_audit_change()', audit_table);
        EXECUTE format('CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION agentry_refuse_audit_change()', audit_table);
    END LOOP;
END
$$;

-- Row-level security on a tenant-owned table: its rows are visible and
-- writable only in a unit of work of their tenant. Every later migration that
-- adds a tenant table calls this, so the policy is written once.
CREATE PROCEDURE agentry_isolate_by_tenant(tenant_table regclass)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s
                    USING (tenant_id = agentry_current_tenant())
                    WITH CHECK (tenant_id = agentry_current_tenant())', tenant_table);
END
$$;
REVOKE ALL ON PROCEDURE agentry_isolate_by_tenant(regclass) FROM PUBLIC;

CALL agentry_isolate_by_tenant('tenant_users');
CALL agentry_isolate_by_tenant('tenant_user_sessions');
CALL agentry_isolate_by_tenant('agents');
CALL agentry_isolate_by_tenant('widgets');
CALL agentry_isolate_by_tenant('conversations');
CALL agentry_isolate_by_tenant('agent_messages');
CALL agentry_isolate_by_tenant('agent_action_runs');
CALL agentry_isolate_by_tenant('agent_usage_events');
CALL agentry_isolate_by_tenant('agent_webhook_deliveries');
CALL agentry_isolate_by_tenant('voice_pii_audits');

-- Before login there is no tenant yet: these two narrow lookups run as the
-- schema owner (SECURITY DEFINER) and return only what authentication needs.
CREATE FUNCTION agentry_find_login(p_email text)
RETURNS TABLE (user_id uuid, tenant_id uuid, password_hash text, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT id, tenant_id, password_hash, role FROM tenant_users WHERE lower(email) = lower(p_email)
$$;

CREATE FUNCTION agentry_find_dashboard_session(p_session_id uuid)
RETURNS TABLE (tenant_id uuid, user_id uuid, role text, expires_at timestamptz, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT s.tenant_id, s.user_id, u.role, s.expires_at, s.revoked_at
    FROM tenant_user_sessions s JOIN tenant_users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id
    WHERE s.id = p_session_id
$$;

REVOKE ALL ON FUNCTION agentry_find_login(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION agentry_find_dashboard_session(uuid) FROM PUBLIC;
