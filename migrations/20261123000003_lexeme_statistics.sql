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
ALTER TABLE kb_lexemes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON kb_lexemes
    USING (tenant_id = agentry_current_tenant())
    WITH CHECK (tenant_id = agentry_current_tenant());

-- Version rows go with their agent, as the chunks do.
ALTER TABLE kb_namespace_versions
    ADD FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id) ON DELETE CASCADE;

-- How many chunks the namespace holds, kept beside the lexeme counts.
ALTER TABLE kb_namespace_versions ADD COLUMN chunks bigint NOT NULL DEFAULT 0;
