-- Leads: the people a tenant's agents met, found again by email or by phone.
--
-- An email names one person, so it is unique per tenant. A phone is not: a
-- household or a front desk shares one, so many leads may hold the same phone.
CREATE TABLE leads (
    id                      uuid PRIMARY KEY,
    tenant_id               uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                    text,
    email                   text,
    phone                   text,
    notes                   text NOT NULL DEFAULT '',
    source_conversation_id  uuid,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (email IS NOT NULL OR phone IS NOT NULL)
);
CREATE UNIQUE INDEX leads_tenant_email_idx ON leads (tenant_id, email) WHERE email IS NOT NULL;
CREATE INDEX leads_tenant_phone_idx ON leads (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX leads_tenant_created_idx ON leads (tenant_id, created_at);
CALL agentry_isolate_by_tenant('leads');
