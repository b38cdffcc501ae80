-- Where a tenant's events go. The signing secret is sealed with the keyring,
-- bound to its row; during a rotation the previous secret keeps signing until
-- `previous_secret_expires_at`.
CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                         text NOT NULL,
    event_types                 text[] NOT NULL,
    enabled                     boolean NOT NULL DEFAULT true,
    description                 text NOT NULL DEFAULT '',
    secret_sealed               bytea NOT NULL,
    previous_secret_sealed      bytea,
    previous_secret_expires_at  timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id, id);
CALL agentry_isolate_by_tenant('webhook_endpoints');
