-- Guardrails in the turn's writes.
--
-- What the finalizer removed from a reply, per rule (counts only, never text),
-- is kept with the turn's chat usage row.
ALTER TABLE agent_usage_events
    ADD COLUMN guardrail_removals jsonb NOT NULL DEFAULT '{}'::jsonb;

-- The first write of a turn, now also given the visitor's message with its
-- personal data replaced (NULL when the scrubber found none). It stores that
-- one when the agent's profile asks for `scrub_visitor_messages`, deciding on
-- the agent row it reads anyway, so an option switched on in one instance
-- holds for the very next turn in every instance. `scrubbed` says which was stored.
DROP FUNCTION agentry_begin_turn(uuid, uuid, uuid, text, uuid, uuid, text, uuid, text);
CREATE FUNCTION agentry_begin_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid, p_channel text,
    p_widget uuid, p_widget_session uuid, p_origin text,
    p_message_id uuid, p_text text, p_scrubbed text)
RETURNS TABLE (outcome text, visitor_seq bigint, agent_version bigint,
               llm_version bigint, namespace_version bigint, scrubbed boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_origins text[];
    v_seq bigint;
    v_agent_version bigint;
    v_scrub boolean;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    IF p_widget IS NOT NULL THEN
        SELECT w.allowed_origins INTO v_origins FROM widgets w
        WHERE w.tenant_id = p_tenant AND w.id = p_widget AND w.agent_id = p_agent;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'widget_gone', NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean;
            RETURN;
        END IF;
        IF p_origin IS NOT NULL AND NOT (p_origin = ANY (v_origins)) THEN
            RETURN QUERY SELECT 'origin_refused', NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean;
            RETURN;
        END IF;
    END IF;
    INSERT INTO conversations AS c (id, tenant_id, agent_id, widget_id, channel, widget_session_id, next_seq)
    VALUES (p_conversation, p_tenant, p_agent, p_widget, p_channel, p_widget_session, 2)
    ON CONFLICT (id) DO UPDATE SET next_seq = c.next_seq + 2
        WHERE c.tenant_id = p_tenant AND c.ended_at IS NULL
    RETURNING c.next_seq - 2 INTO v_seq;
    IF v_seq IS NULL THEN
        RETURN QUERY SELECT 'conversation_ended', NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean;
        RETURN;
    END IF;
    SELECT a.version, coalesce((a.profile->>'scrub_visitor_messages')::boolean, false)
    INTO v_agent_version, v_scrub
    FROM agents a WHERE a.tenant_id = p_tenant AND a.id = p_agent;
    v_scrub := coalesce(v_scrub, false) AND p_scrubbed IS NOT NULL;
    INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
    VALUES (p_message_id, p_tenant, p_conversation, v_seq, 'visitor',
            CASE WHEN v_scrub THEN p_scrubbed ELSE p_text END);
    RETURN QUERY SELECT 'ok', v_seq, v_agent_version,
        coalesce((SELECT l.version FROM tenant_llm_configs l WHERE l.tenant_id = p_tenant), 0),
        coalesce((SELECT n.version FROM kb_namespace_versions n
                  WHERE n.tenant_id = p_tenant AND n.agent_id = p_agent), 0),
        v_scrub;
END
$$;

-- The second write of a turn; usage rows may carry `guardrail_removals`.
CREATE OR REPLACE FUNCTION agentry_finish_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid,
    p_message_id uuid, p_seq bigint, p_content text,
    p_usage jsonb, p_actions jsonb)
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
    INSERT INTO agent_action_runs (id, tenant_id, agent_id, conversation_id, tool, status, input)
    SELECT a.id, p_tenant, p_agent, p_conversation, a.tool, a.status, a.input
    FROM jsonb_to_recordset(p_actions) AS a (id uuid, tool text, status text, input jsonb);
    RETURN v_created_at;
END
$$;
