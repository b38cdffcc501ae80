-- The chat path: turn ordering, the knowledge base, and each tenant's own LLM.

-- Each turn reserves two positions (visitor message, reply) in one atomic
-- UPDATE, so turns reaching two instances never interleave or collide.
ALTER TABLE conversations ADD COLUMN next_seq bigint NOT NULL DEFAULT 0;
-- The widget session this conversation belongs to (the session itself lives in
-- Redis, with the visitor's IP, and expires with it).
ALTER TABLE conversations ADD COLUMN widget_session_id uuid;
CREATE INDEX conversations_widget_session_idx ON conversations (tenant_id, widget_session_id);

CREATE TABLE kb_documents (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id        uuid NOT NULL,
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    content_type    text NOT NULL CHECK (content_type IN ('text', 'markdown', 'html')),
    content         text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
    failure_reason  text,
    chunk_count     integer NOT NULL DEFAULT 0,
    embedder        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id),
    FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX kb_documents_agent_idx ON kb_documents (tenant_id, agent_id, created_at);

-- namespace is 'tenant:{tenant_id}:agent:{agent_id}', derived and indexed, so
-- every retrieval query names it and cannot reach past it.
CREATE TABLE kb_chunks (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id     uuid NOT NULL,
    document_id  uuid NOT NULL,
    namespace    text GENERATED ALWAYS AS ('tenant:' || tenant_id::text || ':agent:' || agent_id::text) STORED,
    ordinal      integer NOT NULL,
    heading      text NOT NULL,
    body         text NOT NULL,
    embedding    real[] NOT NULL,
    search       tsvector GENERATED ALWAYS AS (to_tsvector('english', heading || ' ' || body)) STORED,
    FOREIGN KEY (document_id, tenant_id) REFERENCES kb_documents (id, tenant_id) ON DELETE CASCADE,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX kb_chunks_namespace_idx ON kb_chunks (namespace);
CREATE INDEX kb_chunks_search_idx ON kb_chunks USING gin (search);

-- Bumped in the transaction that changes a namespace's chunks; retrievers on
-- every instance compare it before answering.
CREATE TABLE kb_namespace_versions (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    agent_id   uuid NOT NULL,
    version    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, agent_id)
);

-- A tenant's own LLM. How to reach it (base URL, Azure deployment, API key)
-- is one sealed JSON value: AES-256-GCM, bound to this tenant and column.
-- Provider and model stay readable: usage records and metrics name them.
CREATE TABLE tenant_llm_configs (
    tenant_id          uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    provider           text NOT NULL,
    model              text NOT NULL,
    connection_sealed  bytea NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CALL agentry_isolate_by_tenant('kb_documents');
CALL agentry_isolate_by_tenant('kb_chunks');
CALL agentry_isolate_by_tenant('kb_namespace_versions');
CALL agentry_isolate_by_tenant('tenant_llm_configs');

-- A visitor's browser names a widget by its public key before any tenant is known.
CREATE FUNCTION agentry_find_widget(p_public_key text)
RETURNS TABLE (widget_id uuid, tenant_id uuid, agent_id uuid, allowed_origins text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT id, tenant_id, agent_id, allowed_origins FROM widgets WHERE public_key = p_public_key
$$;
REVOKE ALL ON FUNCTION agentry_find_widget(text) FROM PUBLIC;

-- CORS preflights carry no key or token: answer only origins some widget allows.
CREATE FUNCTION agentry_origin_allowed(p_origin text)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT EXISTS (SELECT 1 FROM widgets WHERE p_origin = ANY (allowed_origins))
$$;
REVOKE ALL ON FUNCTION agentry_origin_allowed(text) FROM PUBLIC;

-- Documents whose ingest job never ran (Redis lost it, or publishing failed
-- after commit): the ingest stage re-enqueues them, so no upload is lost.
-- Touching updated_at keeps one document from being re-enqueued every sweep.
CREATE FUNCTION agentry_claim_stale_pending_documents(p_older_than interval)
RETURNS TABLE (tenant_id uuid, agent_id uuid, document_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE kb_documents d SET updated_at = now()
    WHERE d.id IN (
        SELECT id FROM kb_documents
        WHERE status = 'pending' AND updated_at < now() - p_older_than
        ORDER BY updated_at LIMIT 100
        FOR UPDATE SKIP LOCKED
    )
    RETURNING d.tenant_id, d.agent_id, d.id
$$;
REVOKE ALL ON FUNCTION agentry_claim_stale_pending_documents(interval) FROM PUBLIC;

-- The development demo page embeds the first widget that allows the server's own origin.
CREATE FUNCTION agentry_demo_widget(p_origin text)
RETURNS TABLE (public_key text, tenant_name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT w.public_key, t.name FROM widgets w JOIN tenants t ON t.id = w.tenant_id
    WHERE p_origin = ANY (w.allowed_origins)
    ORDER BY w.created_at, w.id LIMIT 1
$$;
REVOKE ALL ON FUNCTION agentry_demo_widget(text) FROM PUBLIC;
