-- API tokens: scoped, revocable bearer tokens for automation (n8n, Zapier,
-- MCP clients). Only the SHA-256 of a token is stored; the token itself is
-- shown once, at creation. Revocation is a column checked on every use, so it
-- takes effect on every instance at once.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes        text[] NOT NULL CHECK (
        cardinality(scopes) > 0 AND scopes <@ ARRAY['leads:read', 'leads:write',
            'conversations:read', 'knowledge:write', 'webhooks:read', 'webhooks:write']
    ),
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    -- The token's last four characters, for the masked form lists show.
    last_four     text NOT NULL CHECK (length(last_four) = 4),
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    -- A token does not outlive the user who made it: removing a user removes their tokens.
    FOREIGN KEY (created_by, tenant_id) REFERENCES tenant_users (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id, id);
CALL agentry_isolate_by_tenant('api_tokens');

-- Before a token is authenticated there is no tenant yet: like
-- agentry_find_dashboard_session, a narrow lookup as the schema owner that
-- returns only what authentication needs, found by the token's hash.
CREATE FUNCTION agentry_find_api_token(p_token_hash bytea)
RETURNS TABLE (id uuid, tenant_id uuid, scopes text[], expires_at timestamptz,
               revoked_at timestamptz, last_used_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT id, tenant_id, scopes, expires_at, revoked_at, last_used_at
    FROM api_tokens WHERE token_hash = p_token_hash
$$;
REVOKE ALL ON FUNCTION agentry_find_api_token(bytea) FROM PUBLIC;
