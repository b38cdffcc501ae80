-- Live takeover: a person on the tenant's team answers a conversation
-- instead of its agent until handing it back.
--
-- handled_by is the team member who has it (NULL: the agent answers). A
-- team member's reply is an assistant message marked human, with its author.
ALTER TABLE conversations
    ADD COLUMN handled_by uuid,
    ADD COLUMN taken_over_at timestamptz,
    -- A team member who leaves returns their conversations to the agent.
    ADD CONSTRAINT conversations_handled_by_fkey FOREIGN KEY (handled_by, tenant_id)
        REFERENCES tenant_users (id, tenant_id) ON DELETE SET NULL (handled_by);
CREATE INDEX conversations_handled_idx ON conversations (tenant_id, handled_by)
    WHERE handled_by IS NOT NULL;

ALTER TABLE agent_messages
    ADD COLUMN human boolean NOT NULL DEFAULT false,
    ADD COLUMN sent_by uuid,
    ADD CONSTRAINT agent_messages_sent_by_fkey FOREIGN KEY (sent_by, tenant_id)
        REFERENCES tenant_users (id, tenant_id) ON DELETE SET NULL (sent_by),
    ADD CONSTRAINT agent_messages_human_is_assistant CHECK (NOT human OR role = 'assistant');

-- A turn's first write, as before, and: while a person has the conversation
-- the visitor's message is stored with one position reserved, not two (no
-- agent reply follows), and the outcome says 'held'. `live` tells the
-- caller that the team watches this conversation (waiting or taken over),
-- so its messages are published to the dashboards.
DROP FUNCTION agentry_begin_turn(uuid, uuid, uuid, text, uuid, uuid, text, uuid, text, text, jsonb);
CREATE FUNCTION agentry_begin_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid, p_channel text,
    p_widget uuid, p_widget_session uuid, p_origin text,
    p_message_id uuid, p_text text, p_scrubbed text, p_pii jsonb)
RETURNS TABLE (outcome text, visitor_seq bigint, agent_version bigint,
               llm_version bigint, namespace_version bigint, scrubbed boolean,
               live boolean, created_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_origins text[];
    v_seq bigint;
    v_held boolean;
    v_live boolean;
    v_agent_version bigint;
    v_scrub boolean;
    v_created_at timestamptz;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    IF p_widget IS NOT NULL THEN
        SELECT w.allowed_origins INTO v_origins FROM widgets w
        WHERE w.tenant_id = p_tenant AND w.id = p_widget AND w.agent_id = p_agent;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'widget_gone', NULL::bigint, NULL::bigint, NULL::bigint,
                NULL::bigint, NULL::boolean, NULL::boolean, NULL::timestamptz;
            RETURN;
        END IF;
        IF p_origin IS NOT NULL AND NOT (p_origin = ANY (v_origins)) THEN
            RETURN QUERY SELECT 'origin_refused', NULL::bigint, NULL::bigint, NULL::bigint,
                NULL::bigint, NULL::boolean, NULL::boolean, NULL::timestamptz;
            RETURN;
        END IF;
    END IF;
    -- The row lock this takes orders the turn against a takeover or handback:
    -- whichever commits first decides whether the agent answers.
    INSERT INTO conversations AS c (id, tenant_id, agent_id, widget_id, channel, widget_session_id, next_seq)
    VALUES (p_conversation, p_tenant, p_agent, p_widget, p_channel, p_widget_session, 2)
    ON CONFLICT (id) DO UPDATE
        SET next_seq = c.next_seq + CASE WHEN c.handled_by IS NULL THEN 2 ELSE 1 END
        WHERE c.tenant_id = p_tenant AND c.ended_at IS NULL
    RETURNING c.next_seq - CASE WHEN c.handled_by IS NULL THEN 2 ELSE 1 END,
              c.handled_by IS NOT NULL,
              c.handled_by IS NOT NULL OR c.status = 'waiting_for_human'
    INTO v_seq, v_held, v_live;
    IF v_seq IS NULL THEN
        RETURN QUERY SELECT 'conversation_ended', NULL::bigint, NULL::bigint, NULL::bigint,
            NULL::bigint, NULL::boolean, NULL::boolean, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT a.version, coalesce((a.profile->>'scrub_visitor_messages')::boolean, false)
    INTO v_agent_version, v_scrub
    FROM agents a WHERE a.tenant_id = p_tenant AND a.id = p_agent;
    v_scrub := (coalesce(v_scrub, false) OR p_channel = 'voice') AND p_scrubbed IS NOT NULL;
    INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
    VALUES (p_message_id, p_tenant, p_conversation, v_seq, 'visitor',
            CASE WHEN v_scrub THEN p_scrubbed ELSE p_text END)
    RETURNING agent_messages.created_at INTO v_created_at;
    IF v_scrub THEN
        INSERT INTO voice_pii_audits (id, tenant_id, conversation_id, pii_kind, occurrences)
        SELECT gen_random_uuid(), p_tenant, p_conversation, k.key, k.value::integer
        FROM jsonb_each_text(coalesce(p_pii, '{}'::jsonb)) AS k;
    END IF;
    RETURN QUERY SELECT CASE WHEN v_held THEN 'held' ELSE 'ok' END, v_seq, v_agent_version,
        coalesce((SELECT l.version FROM tenant_llm_configs l WHERE l.tenant_id = p_tenant), 0),
        coalesce((SELECT n.version FROM kb_namespace_versions n
                  WHERE n.tenant_id = p_tenant AND n.agent_id = p_agent), 0),
        v_scrub, v_live, v_created_at;
END
$$;

-- A turn's second write, as before, now also saying whether the team
-- watches the conversation (the turn may have escalated it).
DROP FUNCTION agentry_finish_turn(uuid, uuid, uuid, uuid, bigint, text, jsonb, jsonb);
CREATE FUNCTION agentry_finish_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid,
    p_message_id uuid, p_seq bigint, p_content text, p_usage jsonb, p_pii jsonb)
RETURNS TABLE (created_at timestamptz, live boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_created_at timestamptz;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
    VALUES (p_message_id, p_tenant, p_conversation, p_seq, 'assistant', p_content)
    RETURNING agent_messages.created_at INTO v_created_at;
    INSERT INTO agent_usage_events
        (id, tenant_id, agent_id, conversation_id, kind, provider, model, prompt_tokens,
         completion_tokens, guardrail_removals)
    SELECT u.id, p_tenant, p_agent, p_conversation, u.kind, u.provider, u.model,
           u.prompt_tokens, u.completion_tokens, coalesce(u.guardrail_removals, '{}'::jsonb)
    FROM jsonb_to_recordset(p_usage) AS u (id uuid, kind text, provider text, model text,
                                          prompt_tokens integer, completion_tokens integer,
                                          guardrail_removals jsonb);
    INSERT INTO voice_pii_audits (id, tenant_id, conversation_id, pii_kind, occurrences)
    SELECT gen_random_uuid(), p_tenant, p_conversation, k.key, k.value::integer
    FROM jsonb_each_text(coalesce(p_pii, '{}'::jsonb)) AS k;
    RETURN QUERY SELECT v_created_at,
        coalesce((SELECT c.handled_by IS NOT NULL OR c.status = 'waiting_for_human'
                  FROM conversations c
                  WHERE c.tenant_id = p_tenant AND c.id = p_conversation), false);
END
$$;
