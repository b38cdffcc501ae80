-- Scheduled jobs (src/jobs): each tick of each job runs once per cluster.
--
-- A run claims its (job, tick_at) by inserting a row here inside the same
-- transaction that does the job's work, so the claim and the effects commit
-- together or not at all: a second instance blocks on the key and then sees
-- the conflict, an instance waking late from a pause finds the tick taken,
-- and a winner that dies rolls back, releasing the tick. Not a tenant table:
-- it names jobs and instances, never a tenant.
CREATE TABLE scheduled_job_runs (
    job          text NOT NULL CHECK (job ~ '^[a-z_]{1,64}$'),
    tick_at      timestamptz NOT NULL,
    instance_id  text NOT NULL CHECK (length(instance_id) BETWEEN 1 AND 100),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    -- 'running' is only ever seen by the claiming transaction itself.
    outcome      text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'success', 'failure')),
    -- What the run did, as numbers only (never a value of the rows it touched).
    counts       jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (job, tick_at)
);
CREATE INDEX scheduled_job_runs_tick_idx ON scheduled_job_runs (tick_at);

-- purge_sessions -----------------------------------------------------------

CREATE INDEX tenant_user_sessions_expires_idx ON tenant_user_sessions (expires_at);
CREATE INDEX tenant_user_sessions_revoked_idx ON tenant_user_sessions (revoked_at)
    WHERE revoked_at IS NOT NULL;
CREATE INDEX operator_sessions_expires_idx ON operator_sessions (expires_at);
-- Widget conversations still pointing at their (Redis) session.
CREATE INDEX conversations_widget_session_started_idx ON conversations (started_at)
    WHERE widget_session_id IS NOT NULL;

-- Dashboard and operator sessions that ended (expired or revoked) more than
-- p_grace ago are deleted. A widget conversation whose session must have
-- expired (a session is created before its conversation's first message, so
-- it ends at most p_widget_session_ttl after the conversation started) loses
-- its pointer to the session and is marked ended: nothing keyed by a dead
-- widget session is left in PostgreSQL.
CREATE FUNCTION agentry_job_purge_sessions(p_grace interval, p_widget_session_ttl interval)
RETURNS TABLE (dashboard_sessions bigint, operator_sessions bigint, widget_conversations bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    WITH gone AS (
        DELETE FROM tenant_user_sessions s
        WHERE s.expires_at < now() - p_grace OR s.revoked_at < now() - p_grace
        RETURNING 1
    )
    SELECT count(*) INTO dashboard_sessions FROM gone;
    WITH gone AS (
        DELETE FROM operator_sessions s
        WHERE s.expires_at < now() - p_grace OR s.revoked_at < now() - p_grace
        RETURNING 1
    )
    SELECT count(*) INTO operator_sessions FROM gone;
    WITH ended AS (
        UPDATE conversations c
        SET widget_session_id = NULL,
            ended_at = coalesce(c.ended_at, least(now(), c.started_at + p_widget_session_ttl))
        WHERE c.widget_session_id IS NOT NULL
          AND c.started_at < now() - p_widget_session_ttl - p_grace
        RETURNING 1
    )
    SELECT count(*) INTO widget_conversations FROM ended;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION agentry_job_purge_sessions(interval, interval) FROM PUBLIC;

-- expire_api_tokens --------------------------------------------------------

-- An expired or revoked token is already refused on use; the job then erases
-- its hash, so nothing that could match a presented token remains. The row
-- stays (name, scopes, last four, dates) and lists as expired or revoked.
ALTER TABLE api_tokens ALTER COLUMN token_hash DROP NOT NULL;
CREATE INDEX api_tokens_live_hash_expires_idx ON api_tokens (expires_at)
    WHERE token_hash IS NOT NULL;

CREATE FUNCTION agentry_job_expire_api_tokens()
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH erased AS (
        UPDATE api_tokens SET token_hash = NULL
        WHERE token_hash IS NOT NULL AND (expires_at <= now() OR revoked_at IS NOT NULL)
        RETURNING 1
    )
    SELECT count(*) FROM erased
$$;
REVOKE ALL ON FUNCTION agentry_job_expire_api_tokens() FROM PUBLIC;

-- rollup_usage -------------------------------------------------------------

-- Daily per-tenant totals of agent_usage_events, for billing: written only by
-- agentry_job_rollup_usage (the application role may read them, not write).
CREATE TABLE usage_daily (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day                date NOT NULL,
    kind               text NOT NULL,
    provider           text NOT NULL,
    model              text NOT NULL,
    events             bigint NOT NULL CHECK (events >= 0),
    prompt_tokens      bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  bigint NOT NULL CHECK (completion_tokens >= 0),
    computed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, kind, provider, model)
);
CALL agentry_isolate_by_tenant('usage_daily');

-- When an event was recorded: the rollup's watermark. created_at says which
-- day an event counts for and may lie in the past (an import, a backfill);
-- recorded_at is when it arrived, so a late event still marks its day as
-- touched. A stable default: existing rows take the migration's time
-- without a table rewrite (and no row trigger fires).
ALTER TABLE agent_usage_events ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX agent_usage_events_recorded_idx ON agent_usage_events (recorded_at);

-- Recomputes, from the events, every (tenant, UTC day) that has an event
-- recorded at or after p_since: each touched day is summed whole and upserted,
-- so running it twice writes the same totals. Events are append-only, so a
-- day's totals only ever grow and no stale row needs deleting.
CREATE FUNCTION agentry_job_rollup_usage(p_since timestamptz)
RETURNS TABLE (days bigint, rows_written bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH touched AS (
        SELECT DISTINCT e.tenant_id, (e.created_at AT TIME ZONE 'UTC')::date AS day
        FROM agent_usage_events e
        WHERE e.recorded_at >= p_since
    ), totals AS (
        SELECT e.tenant_id, t.day, e.kind, e.provider, e.model, count(*) AS events,
               coalesce(sum(e.prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum(e.completion_tokens), 0) AS completion_tokens
        FROM touched t
        JOIN agent_usage_events e
          ON e.tenant_id = t.tenant_id
         AND e.created_at >= (t.day::timestamp AT TIME ZONE 'UTC')
         AND e.created_at < ((t.day + 1)::timestamp AT TIME ZONE 'UTC')
        GROUP BY e.tenant_id, t.day, e.kind, e.provider, e.model
    ), written AS (
        INSERT INTO usage_daily AS u
            (tenant_id, day, kind, provider, model, events, prompt_tokens, completion_tokens)
        SELECT tenant_id, day, kind, provider, model, events, prompt_tokens, completion_tokens
        FROM totals
        ON CONFLICT (tenant_id, day, kind, provider, model) DO UPDATE
        SET events = EXCLUDED.events,
            prompt_tokens = EXCLUDED.prompt_tokens,
            completion_tokens = EXCLUDED.completion_tokens,
            computed_at = now()
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM touched), (SELECT count(*) FROM written)
$$;
REVOKE ALL ON FUNCTION agentry_job_rollup_usage(timestamptz) FROM PUBLIC;

-- apply_retention ----------------------------------------------------------

-- Each tenant's retention, in days; NULL keeps forever.
CREATE TABLE tenant_retention (
    tenant_id                uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    conversations_days       integer CHECK (conversations_days BETWEEN 1 AND 3650),
    webhook_deliveries_days  integer CHECK (webhook_deliveries_days BETWEEN 1 AND 3650),
    files_days               integer CHECK (files_days BETWEEN 1 AND 3650),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CALL agentry_isolate_by_tenant('tenant_retention');

CREATE INDEX outbox_events_settled_created_idx ON outbox_events (tenant_id, created_at)
    WHERE settled_at IS NOT NULL;

-- Conversations whose last activity (last message, end or start) is older
-- than the tenant's window go, with their messages, bookings, quotes, SMS
-- and recordings (cascades); the recordings' object keys are returned so the
-- caller removes the sealed audio from the object store after commit. Leads
-- stay (the tenant's contacts, not the conversation), and so do the audit
-- tables' rows.
CREATE FUNCTION agentry_retention_conversations()
RETURNS TABLE (conversations bigint, recording_keys text[])
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH expired AS (
        SELECT c.id, c.tenant_id
        FROM conversations c
        JOIN tenant_retention r ON r.tenant_id = c.tenant_id
        WHERE r.conversations_days IS NOT NULL
          AND c.started_at < now() - make_interval(days => r.conversations_days)
          AND greatest(c.started_at, c.ended_at,
                       (SELECT max(m.created_at) FROM agent_messages m
                        WHERE m.conversation_id = c.id))
              < now() - make_interval(days => r.conversations_days)
    ), recordings AS (
        DELETE FROM call_recordings cr USING expired e
        WHERE cr.tenant_id = e.tenant_id AND cr.conversation_id = e.id
        RETURNING cr.object_key
    ), gone AS (
        DELETE FROM conversations c USING expired e
        WHERE c.id = e.id AND c.tenant_id = e.tenant_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone),
           coalesce((SELECT array_agg(object_key) FROM recordings), '{}')
$$;
REVOKE ALL ON FUNCTION agentry_retention_conversations() FROM PUBLIC;

-- Webhook delivery attempts stay append-only: the trigger below refuses every
-- UPDATE and TRUNCATE, and every DELETE but one issued from inside
-- agentry_retention_webhook_deliveries, recognised by all of: the setting
-- agentry.retention that only its SET clause turns on (restored when it
-- returns, even on error), current_user being the table's owner (the
-- SECURITY DEFINER identity; the app role is not), the function's own frame
-- in the call stack (set_config alone, by anyone, is not enough), and the
-- row being older than its tenant's window. The owner can of course drop the
-- trigger: this guards against mistakes and the application role, not
-- against a superuser acting on purpose.
CREATE FUNCTION agentry_retention_may_delete(p_table regclass, p_tenant uuid, p_created_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public AS $$
DECLARE
    v_stack text;
    v_days integer;
BEGIN
    IF coalesce(current_setting('agentry.retention', true), '') <> 'on' THEN
        RETURN false;
    END IF;
    IF current_user <> (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = p_table) THEN
        RETURN false;
    END IF;
    GET DIAGNOSTICS v_stack = PG_CONTEXT;
    IF position(E'\nPL/pgSQL function agentry_retention_webhook_deliveries() line ' IN v_stack) = 0 THEN
        RETURN false;
    END IF;
    SELECT r.webhook_deliveries_days INTO v_days FROM tenant_retention r WHERE r.tenant_id = p_tenant;
    RETURN coalesce(p_created_at < now() - make_interval(days => v_days), false);
END
$$;

CREATE OR REPLACE FUNCTION agentry_refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'agent_webhook_deliveries' THEN
        IF agentry_retention_may_delete(TG_RELID, OLD.tenant_id, OLD.created_at) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION agentry_retention_webhook_deliveries()
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public
SET agentry.retention = 'on' AS $$
DECLARE
    v_deleted bigint;
BEGIN
    WITH gone AS (
        DELETE FROM agent_webhook_deliveries d USING tenant_retention r
        WHERE r.tenant_id = d.tenant_id AND r.webhook_deliveries_days IS NOT NULL
          AND d.created_at < now() - make_interval(days => r.webhook_deliveries_days)
        RETURNING 1
    )
    SELECT count(*) INTO v_deleted FROM gone;
    RETURN v_deleted;
END
$$;
REVOKE ALL ON FUNCTION agentry_retention_webhook_deliveries() FROM PUBLIC;

-- Settled outbox events (every endpoint has a final attempt or a retry on
-- record) past the tenant's delivery window; unsettled ones stay for the relay.
CREATE FUNCTION agentry_retention_outbox_events()
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM outbox_events o USING tenant_retention r
        WHERE r.tenant_id = o.tenant_id AND r.webhook_deliveries_days IS NOT NULL
          AND o.settled_at IS NOT NULL
          AND o.created_at < now() - make_interval(days => r.webhook_deliveries_days)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION agentry_retention_outbox_events() FROM PUBLIC;
