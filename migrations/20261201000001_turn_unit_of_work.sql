-- A chat turn as two units of work, each one statement and one round trip.
--
-- The instances cache what a turn reads (the agent's brief, the tenant's LLM
-- connection, the namespace's chunks, the conversation's history). Each cache
-- is validated by a version that the turn's first write returns anyway, so a
-- change made on any instance is seen by the next turn on every instance, and
-- a warm turn runs no read-only transaction at all.

-- One sequence numbers every cached configuration row: a value is never
-- reused, not even after its row is deleted and created again.
CREATE SEQUENCE agentry_cache_versions;

CREATE FUNCTION agentry_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('agentry_cache_versions');
    RETURN NEW;
END
$$;

ALTER TABLE agents ADD COLUMN version bigint NOT NULL DEFAULT nextval('agentry_cache_versions');
CREATE TRIGGER bump_version BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION agentry_bump_version();

ALTER TABLE tenant_llm_configs ADD COLUMN version bigint NOT NULL DEFAULT nextval('agentry_cache_versions');
CREATE TRIGGER bump_version BEFORE UPDATE ON tenant_llm_configs
    FOR EACH ROW EXECUTE FUNCTION agentry_bump_version();

-- A document's revision changes whenever its row does (its chunks are only
-- replaced together with it), so a retriever reloads just the documents whose
-- revision it does not hold.
ALTER TABLE kb_documents ADD COLUMN version bigint NOT NULL DEFAULT nextval('agentry_cache_versions');
CREATE TRIGGER bump_version BEFORE UPDATE ON kb_documents
    FOR EACH ROW EXECUTE FUNCTION agentry_bump_version();

-- The first write of a turn. Sets the tenant of the unit of work itself (one
-- statement outside an explicit transaction is its own transaction, so the
-- setting is transaction-local and PgBouncer-safe), checks the widget as it is
-- now (deleted: 'widget_gone'; the page's origin no longer allowed:
-- 'origin_refused'), creates the conversation at its first message (a session
-- that never speaks leaves no row), reserves the two positions of the turn,
-- stores the visitor's message, and returns the versions the caches are
-- checked against. Runs as the caller: row-level security applies throughout.
CREATE FUNCTION agentry_begin_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid, p_channel text,
    p_widget uuid, p_widget_session uuid, p_origin text,
    p_message_id uuid, p_text text)
RETURNS TABLE (outcome text, visitor_seq bigint, agent_version bigint,
               llm_version bigint, namespace_version bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_origins text[];
    v_seq bigint;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    IF p_widget IS NOT NULL THEN
        SELECT w.allowed_origins INTO v_origins FROM widgets w
        WHERE w.tenant_id = p_tenant AND w.id = p_widget AND w.agent_id = p_agent;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'widget_gone', NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        IF p_origin IS NOT NULL AND NOT (p_origin = ANY (v_origins)) THEN
            RETURN QUERY SELECT 'origin_refused', NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
    END IF;
    INSERT INTO conversations AS c (id, tenant_id, agent_id, widget_id, channel, widget_session_id, next_seq)
    VALUES (p_conversation, p_tenant, p_agent, p_widget, p_channel, p_widget_session, 2)
    ON CONFLICT (id) DO UPDATE SET next_seq = c.next_seq + 2
        WHERE c.tenant_id = p_tenant AND c.ended_at IS NULL
    RETURNING c.next_seq - 2 INTO v_seq;
    IF v_seq IS NULL THEN
        RETURN QUERY SELECT 'conversation_ended', NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
    VALUES (p_message_id, p_tenant, p_conversation, v_seq, 'visitor', p_text);
    RETURN QUERY SELECT 'ok', v_seq,
        (SELECT a.version FROM agents a WHERE a.tenant_id = p_tenant AND a.id = p_agent),
        coalesce((SELECT l.version FROM tenant_llm_configs l WHERE l.tenant_id = p_tenant), 0),
        coalesce((SELECT n.version FROM kb_namespace_versions n
                  WHERE n.tenant_id = p_tenant AND n.agent_id = p_agent), 0);
END
$$;

-- The second write of a turn: the cleaned reply, its usage rows and its
-- action runs (multi-row inserts from JSON arrays), in one statement.
-- p_usage: [{id, kind, provider, model, prompt_tokens, completion_tokens}];
-- p_actions: [{id, tool, status, input}] (ids are the caller's time-ordered UUIDs). Returns the reply's creation time.
CREATE FUNCTION agentry_finish_turn(
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
        (id, tenant_id, agent_id, conversation_id, kind, provider, model, prompt_tokens, completion_tokens)
    SELECT u.id, p_tenant, p_agent, p_conversation, u.kind, u.provider, u.model,
           u.prompt_tokens, u.completion_tokens
    FROM jsonb_to_recordset(p_usage) AS u (id uuid, kind text, provider text, model text,
                                          prompt_tokens integer, completion_tokens integer);
    INSERT INTO agent_action_runs (id, tenant_id, agent_id, conversation_id, tool, status, input)
    SELECT a.id, p_tenant, p_agent, p_conversation, a.tool, a.status, a.input
    FROM jsonb_to_recordset(p_actions) AS a (id uuid, tool text, status text, input jsonb);
    RETURN v_created_at;
END
$$;
