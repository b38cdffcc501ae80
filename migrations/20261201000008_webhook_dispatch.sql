-- Webhook dispatch: what lets the outbox stand in for Redis when Redis loses
-- its data (FLUSHALL, a restart without persistence).
--
-- An event is settled once every endpoint subscribed to it has a final
-- delivery row or a retry recorded with its due time. Until then the event
-- can be republished: when the Redis epoch sentinel vanishes, or when it has
-- stayed unsettled for too long. A retry's due time is in its delivery row,
-- so a lost delayed set is rebuilt from PostgreSQL.
ALTER TABLE outbox_events ADD COLUMN settled_at timestamptz;
CREATE INDEX outbox_events_unsettled_idx ON outbox_events (published_at)
    WHERE settled_at IS NULL;

-- Append-only still: a retry's due time is written with its row, never later.
ALTER TABLE agent_webhook_deliveries ADD COLUMN next_attempt_at timestamptz;
-- The dispatcher asks "what is the latest attempt of this event at this endpoint".
CREATE INDEX agent_webhook_deliveries_event_idx
    ON agent_webhook_deliveries (event_id, endpoint_id, attempt);
CREATE INDEX agent_webhook_deliveries_retrying_idx
    ON agent_webhook_deliveries (next_attempt_at) WHERE outcome = 'retrying';
-- The dashboard lists a tenant's deliveries newest first, by id (UUIDv7).
CREATE INDEX agent_webhook_deliveries_tenant_id_idx ON agent_webhook_deliveries (tenant_id, id);

-- Republishes unsettled events: all of them after Redis lost its data
-- (p_published_before = now()), or those published longer ago than a
-- deadline (a lost or trimmed stream entry). Runs as the schema owner,
-- across tenants, like agentry_claim_outbox.
CREATE FUNCTION agentry_republish_unsettled(p_published_before timestamptz)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH reset AS (
        UPDATE outbox_events SET published_at = NULL
        WHERE settled_at IS NULL AND published_at IS NOT NULL
          AND published_at <= p_published_before
        RETURNING 1
    )
    SELECT count(*)::integer FROM reset
$$;
REVOKE ALL ON FUNCTION agentry_republish_unsettled(timestamptz) FROM PUBLIC;

-- Retries whose latest attempt is `retrying` and due by p_due_before: after
-- Redis lost its delayed set, or when a retry never reached it. With the
-- event, so the caller can schedule the next attempt without another read.
-- Retrying rows stay in the table for ever (append-only); the lower bound
-- keeps this a bounded range scan of the partial index. A retry overdue by
-- 60 days (the sweep runs every few seconds) is given up.
CREATE FUNCTION agentry_pending_webhook_retries(p_due_before timestamptz, p_limit integer)
RETURNS TABLE (id uuid, tenant_id uuid, event_type text, payload jsonb, created_at timestamptz,
               endpoint_id uuid, attempt integer, next_attempt_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT o.id, o.tenant_id, o.event_type, o.payload, o.created_at,
           d.endpoint_id, d.attempt, d.next_attempt_at
    FROM agent_webhook_deliveries d
    JOIN outbox_events o ON o.id = d.event_id
    WHERE d.outcome = 'retrying' AND d.next_attempt_at <= p_due_before
      AND d.next_attempt_at >= now() - interval '60 days'
      AND NOT EXISTS (
          SELECT 1 FROM agent_webhook_deliveries later
          WHERE later.event_id = d.event_id AND later.endpoint_id = d.endpoint_id
            AND (later.attempt > d.attempt OR (later.attempt = d.attempt AND later.id > d.id))
      )
    ORDER BY d.next_attempt_at
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION agentry_pending_webhook_retries(timestamptz, integer) FROM PUBLIC;
