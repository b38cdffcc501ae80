-- SMS and voice over Twilio: a tenant's phone numbers mapped to agents, its
-- Twilio credentials (the auth token sealed by the keyring, like the LLM
-- key), the SMS suppression list, outbound SMS sent later through Twilio's
-- REST API, and the delivery statuses Twilio reports back.

CREATE TABLE phone_numbers (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- One number belongs to one tenant in the whole system: inbound requests
    -- find their tenant by the number called.
    number      text NOT NULL UNIQUE CHECK (number ~ '^\+[1-9][0-9]{7,14}$'),
    agent_id    uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id),
    FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX phone_numbers_tenant_idx ON phone_numbers (tenant_id, id);
CALL agentry_isolate_by_tenant('phone_numbers');

CREATE TABLE tenant_twilio_configs (
    tenant_id          uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    account_sid        text NOT NULL CHECK (account_sid ~ '^AC[0-9a-f]{32}$'),
    auth_token_sealed  bytea NOT NULL,
    -- Answered to HELP and INFO.
    help_text          text CHECK (length(help_text) BETWEEN 1 AND 320),
    -- Said when a call is answered.
    voice_greeting     text CHECK (length(voice_greeting) BETWEEN 1 AND 500),
    -- Where escalate_to_human transfers a call.
    escalation_number  text CHECK (escalation_number ~ '^\+[1-9][0-9]{7,14}$'),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CALL agentry_isolate_by_tenant('tenant_twilio_configs');

-- Senders who texted STOP (or a synonym) to one of the tenant's numbers.
CREATE TABLE sms_suppressions (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sender      text NOT NULL CHECK (sender ~ '^\+[1-9][0-9]{7,14}$'),
    keyword     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sender)
);
CALL agentry_isolate_by_tenant('sms_suppressions');

-- A text conversation is one per tenant number and sender; a call is one per
-- CallSid. channel_key names it, so every instance finds the same one.
ALTER TABLE conversations ADD COLUMN channel_key text;
CREATE UNIQUE INDEX conversations_channel_key_idx
    ON conversations (tenant_id, channel, channel_key) WHERE channel_key IS NOT NULL;

-- Replies that missed Twilio's webhook deadline, sent through the Messages
-- REST API by whichever instance claims them (claimed_until: a dead
-- instance's claim lapses and another sends it).
CREATE TABLE sms_outbound (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL,
    from_number      text NOT NULL,
    to_number        text NOT NULL,
    body             text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'failed', 'suppressed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_until    timestamptz,
    message_sid      text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX sms_outbound_due_idx ON sms_outbound (next_attempt_at) WHERE state = 'pending';
CALL agentry_isolate_by_tenant('sms_outbound');

-- Twilio's status callbacks, as reported.
CREATE TABLE sms_delivery_statuses (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    message_sid  text NOT NULL,
    status       text NOT NULL,
    error_code   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_delivery_statuses_sid_idx ON sms_delivery_statuses (tenant_id, message_sid);
CALL agentry_isolate_by_tenant('sms_delivery_statuses');

-- Before the tenant is known: the number called names it, with its agent and
-- the auth token that signs the tenant's webhooks.
CREATE FUNCTION agentry_find_phone_number(p_number text)
RETURNS TABLE (phone_number_id uuid, tenant_id uuid, agent_id uuid, auth_token_sealed bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT p.id, p.tenant_id, p.agent_id, c.auth_token_sealed
    FROM phone_numbers p LEFT JOIN tenant_twilio_configs c ON c.tenant_id = p.tenant_id
    WHERE p.number = p_number
$$;
REVOKE ALL ON FUNCTION agentry_find_phone_number(text) FROM PUBLIC;

-- Claims due outbound messages of every tenant for this instance.
CREATE FUNCTION agentry_claim_sms_outbound(p_limit integer, p_claim interval)
RETURNS TABLE (id uuid, tenant_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE sms_outbound o SET claimed_until = now() + p_claim, attempts = o.attempts + 1
    WHERE o.id IN (
        SELECT s.id FROM sms_outbound s
        WHERE s.state = 'pending' AND s.next_attempt_at <= now()
          AND (s.claimed_until IS NULL OR s.claimed_until < now())
        ORDER BY s.next_attempt_at LIMIT p_limit
        FOR UPDATE SKIP LOCKED)
    RETURNING o.id, o.tenant_id
$$;
REVOKE ALL ON FUNCTION agentry_claim_sms_outbound(integer, interval) FROM PUBLIC;

-- A turn's first write, as before, and: a voice line is always stored
-- scrubbed; a stored line that was scrubbed leaves an audit row per kind
-- (counts only, never the values). p_pii is {"phone": 1, ...}.
DROP FUNCTION agentry_begin_turn(uuid, uuid, uuid, text, uuid, uuid, text, uuid, text, text);
CREATE FUNCTION agentry_begin_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid, p_channel text,
    p_widget uuid, p_widget_session uuid, p_origin text,
    p_message_id uuid, p_text text, p_scrubbed text, p_pii jsonb)
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
    v_scrub := (coalesce(v_scrub, false) OR p_channel = 'voice') AND p_scrubbed IS NOT NULL;
    INSERT INTO agent_messages (id, tenant_id, conversation_id, seq, role, content)
    VALUES (p_message_id, p_tenant, p_conversation, v_seq, 'visitor',
            CASE WHEN v_scrub THEN p_scrubbed ELSE p_text END);
    IF v_scrub THEN
        INSERT INTO voice_pii_audits (id, tenant_id, conversation_id, pii_kind, occurrences)
        SELECT gen_random_uuid(), p_tenant, p_conversation, k.key, k.value::integer
        FROM jsonb_each_text(coalesce(p_pii, '{}'::jsonb)) AS k;
    END IF;
    RETURN QUERY SELECT 'ok', v_seq, v_agent_version,
        coalesce((SELECT l.version FROM tenant_llm_configs l WHERE l.tenant_id = p_tenant), 0),
        coalesce((SELECT n.version FROM kb_namespace_versions n
                  WHERE n.tenant_id = p_tenant AND n.agent_id = p_agent), 0),
        v_scrub;
END
$$;

-- A turn's second write, as before, and the audit rows of a reply stored
-- scrubbed (voice: the caller heard the reply; the transcript keeps it scrubbed).
DROP FUNCTION agentry_finish_turn(uuid, uuid, uuid, uuid, bigint, text, jsonb);
CREATE FUNCTION agentry_finish_turn(
    p_tenant uuid, p_agent uuid, p_conversation uuid,
    p_message_id uuid, p_seq bigint, p_content text, p_usage jsonb, p_pii jsonb)
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
    INSERT INTO voice_pii_audits (id, tenant_id, conversation_id, pii_kind, occurrences)
    SELECT gen_random_uuid(), p_tenant, p_conversation, k.key, k.value::integer
    FROM jsonb_each_text(coalesce(p_pii, '{}'::jsonb)) AS k;
    RETURN v_created_at;
END
$$;
