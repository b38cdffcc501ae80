-- Per-tenant rate-limit tiers, set by an operator: a load-test tenant, or a
-- customer with a busy site, gets a higher limit without touching the
-- defaults in [rate_limits]. Only tiers counted within one tenant can be
-- overridden; auth and admin are counted per client IP before any tenant is known.
CREATE TABLE tenant_rate_limits (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tier        text NOT NULL CHECK (tier IN ('chat', 'upload', 'standard', 'provider_webhooks',
                                              'widget_sessions', 'widget_messages', 'api_tokens')),
    per_minute  integer NOT NULL CHECK (per_minute BETWEEN 1 AND 60000000),
    set_by      uuid NOT NULL REFERENCES operators (id),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, tier)
);
-- A tenant reads its own overrides but cannot write them (the tenant policy
-- of agentry_isolate_by_tenant would let it raise its own limits); operators
-- manage every tenant's.
ALTER TABLE tenant_rate_limits ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON tenant_rate_limits FOR SELECT
    USING (tenant_id = agentry_current_tenant());
CREATE POLICY operator_manage ON tenant_rate_limits
    USING (agentry_current_operator() IS NOT NULL)
    WITH CHECK (agentry_current_operator() IS NOT NULL);

-- What every instance's limiter keeps in memory, refreshed every few seconds:
-- each overridden tenant's tiers and, for the widget-session tier (counted
-- before the widget is looked up), the public keys of its widgets.
CREATE FUNCTION agentry_rate_limit_overrides()
RETURNS TABLE (tenant_id uuid, tier text, per_minute integer, public_keys text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT o.tenant_id, o.tier, o.per_minute,
           CASE WHEN o.tier = 'widget_sessions' THEN
               ARRAY(SELECT w.public_key FROM widgets w WHERE w.tenant_id = o.tenant_id)
           ELSE '{}'::text[] END
    FROM tenant_rate_limits o
$$;
REVOKE ALL ON FUNCTION agentry_rate_limit_overrides() FROM PUBLIC;
