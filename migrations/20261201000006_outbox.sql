-- The transactional outbox: an event is written in the same transaction as
-- the data it describes, so it exists exactly when that data was committed.
-- A relay on any instance publishes unpublished events to a Redis stream and
-- marks them; one that dies mid-way leaves them unpublished for the next.
CREATE TABLE outbox_events (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    event_type    text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_events_unpublished_idx ON outbox_events (id) WHERE published_at IS NULL;
CALL agentry_isolate_by_tenant('outbox_events');

-- The relay works across tenants; these two narrow functions run as the
-- schema owner. Claimed rows stay locked until the caller's transaction ends,
-- so two relays never publish the same batch at once (SKIP LOCKED).
CREATE FUNCTION agentry_claim_outbox(p_limit integer)
RETURNS TABLE (id uuid, tenant_id uuid, event_type text, payload jsonb, created_at timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT o.id, o.tenant_id, o.event_type, o.payload, o.created_at
    FROM outbox_events o
    WHERE o.published_at IS NULL
    ORDER BY o.id
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED
$$;
REVOKE ALL ON FUNCTION agentry_claim_outbox(integer) FROM PUBLIC;

CREATE FUNCTION agentry_mark_outbox_published(p_ids uuid[])
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH marked AS (
        UPDATE outbox_events SET published_at = now()
        WHERE id = ANY (p_ids) AND published_at IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM marked
$$;
REVOKE ALL ON FUNCTION agentry_mark_outbox_published(uuid[]) FROM PUBLIC;

-- What the relay's backlog gauge reads.
CREATE FUNCTION agentry_outbox_backlog()
RETURNS TABLE (unpublished bigint, oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT count(*), min(created_at) FROM outbox_events WHERE published_at IS NULL
$$;
REVOKE ALL ON FUNCTION agentry_outbox_backlog() FROM PUBLIC;
