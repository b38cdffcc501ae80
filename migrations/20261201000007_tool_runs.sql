-- Tools that act: runs recorded with their result, bookings and quote
-- requests tied to their lead and conversation, conversations waiting for
-- a person.

-- A run is recorded once per conversation and provider call id, so a call
-- seen again (a retried turn, a model repeating itself) answers its first
-- run instead of acting twice.
ALTER TABLE agent_action_runs
    ADD COLUMN call_id text,
    ADD COLUMN duration_ms integer CHECK (duration_ms >= 0);
CREATE UNIQUE INDEX agent_action_runs_call_idx
    ON agent_action_runs (tenant_id, conversation_id, call_id) WHERE call_id IS NOT NULL;

-- The person the conversation is with, once known, and whether it waits
-- for one of the tenant's people.
ALTER TABLE conversations
    ADD COLUMN lead_id uuid REFERENCES leads (id) ON DELETE SET NULL,
    ADD COLUMN status text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'waiting_for_human')),
    ADD COLUMN escalated_at timestamptz,
    ADD COLUMN escalation_reason text;
CREATE INDEX conversations_waiting_idx ON conversations (tenant_id, escalated_at)
    WHERE status = 'waiting_for_human';

-- lead_id is NULL while the visitor has not left contact details; capturing
-- them later in the conversation fills it in.
CREATE TABLE bookings (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL,
    lead_id          uuid REFERENCES leads (id) ON DELETE SET NULL,
    requested_time   text NOT NULL,
    service          text,
    note             text,
    status           text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX bookings_conversation_idx ON bookings (tenant_id, conversation_id);
CREATE INDEX bookings_lead_idx ON bookings (tenant_id, lead_id);
CALL agentry_isolate_by_tenant('bookings');

CREATE TABLE quote_requests (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL,
    lead_id          uuid REFERENCES leads (id) ON DELETE SET NULL,
    details          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX quote_requests_conversation_idx ON quote_requests (tenant_id, conversation_id);
CREATE INDEX quote_requests_lead_idx ON quote_requests (tenant_id, lead_id);
CALL agentry_isolate_by_tenant('quote_requests');

-- The second write of a turn no longer records tool calls: each run wrote
-- its own row, with its result, when it ran.
DROP FUNCTION agentry_finish_turn(uuid, uuid, uuid, uuid, bigint, text, jsonb, jsonb);
CREATE FUNCTION agentry_finish_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid,
    p_message_id uuid, p_seq bigint, p_content text, p_usage jsonb)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_created_at timestamptz;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
    VALUES (p_message_id, p_tenant, p_conversation, p_seq, 'assistant', p_content)
    RETURNING created_at INTO v_created_at;
    INSERT INTO agent_usage_events
        (id, tenant_id, agent_id, conversation_id, kind, provider, model, prompt_tokens,
         completion_tokens, guardrail_removals)
    SELECT u.id, p_tenant, p_agent, p_conversation, u.kind, u.provider, u.model,
           u.prompt_tokens, u.completion_tokens, coalesce(u.guardrail_removals, '{}'::jsonb)
    FROM jsonb_to_recordset(p_usage) AS u (id uuid, kind text, provider text, model text,
                                          prompt_tokens integer, completion_tokens integer,
                                          guardrail_removals jsonb);
    RETURN v_created_at;
END
$$;
