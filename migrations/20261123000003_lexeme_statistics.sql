-- Full-text statistics per namespace: in how many chunks each lexeme occurs.
-- Retrieval ORs only the rarest query words (those that say something about
-- the question), so it ranks a few hundred candidates instead of the whole
-- namespace: visitors ask in sentences full of words every chunk contains.

CREATE TABLE kb_lexemes (
    tenant_id    uuid NOT NULL,
    agent_id     uuid NOT NULL,
    lexeme       text NOT NULL,
    chunk_count  integer NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, lexeme),
    FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id) ON DELETE CASCADE
);
CALL agentry_isolate_by_tenant('kb_lexemes');

-- Version rows go with their agent, as the chunks do.
ALTER TABLE kb_namespace_versions
    ADD FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id) ON DELETE CASCADE;

-- How many chunks the namespace holds, kept beside the lexeme counts.
ALTER TABLE kb_namespace_versions ADD COLUMN chunks bigint NOT NULL DEFAULT 0;

-- Full-text search over one namespace. Under row-level security PostgreSQL
-- applies the tenant policy before any qual whose function is not leakproof,
-- and the full-text match (ts_match_vq) is not: as the application role the
-- GIN index could never be used, and every search read the tenant's whole
-- table. This function runs as the owner so the index works, and enforces the
-- same scope itself: only the tenant of the current unit of work, only the
-- namespace asked for.
-- One full-text index per namespace in effect: GIN over (namespace, search),
-- so a search reads only its own namespace's matches, never other tenants'.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX kb_chunks_namespace_search_idx ON kb_chunks USING gin (namespace, search);
DROP INDEX kb_chunks_search_idx;

CREATE FUNCTION agentry_kb_lexical_search(p_tenant uuid, p_namespace text, p_query tsquery, p_limit integer)
RETURNS TABLE (chunk_id uuid)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF p_tenant IS DISTINCT FROM agentry_current_tenant() THEN
        RAISE EXCEPTION 'full-text search outside the current tenant' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT c.id FROM kb_chunks c
        WHERE c.namespace = p_namespace AND c.search @@ p_query AND c.tenant_id = p_tenant
        ORDER BY ts_rank_cd(c.search, p_query) DESC, c.id
        LIMIT p_limit;
END
$$;
REVOKE ALL ON FUNCTION agentry_kb_lexical_search(uuid, text, tsquery, integer) FROM PUBLIC;
