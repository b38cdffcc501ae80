-- Retention for tenants' files: a file older than its tenant's files_days
-- goes with its share links (cascade) and, when it fed an agent's knowledge
-- base, with that document, whose namespace version moves on so that every
-- instance's retriever drops it at its next turn. The object keys come back
-- for deletion from the object store after the job's transaction commits.
-- Data-modifying WITH parts run once, to completion, whether read or not.
CREATE FUNCTION agentry_retention_files()
RETURNS TABLE (files bigint, object_keys text[])
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH gone AS (
        DELETE FROM files f USING tenant_retention r
        WHERE r.tenant_id = f.tenant_id AND r.files_days IS NOT NULL
          AND f.created_at < now() - make_interval(days => r.files_days)
        RETURNING f.tenant_id, f.kb_document_id, f.object_key
    ), documents AS (
        DELETE FROM kb_documents d USING gone g
        WHERE d.tenant_id = g.tenant_id AND d.id = g.kb_document_id
        RETURNING d.tenant_id, d.agent_id
    ), bumped AS (
        INSERT INTO kb_namespace_versions (tenant_id, agent_id, version)
        SELECT DISTINCT tenant_id, agent_id, 1 FROM documents
        ON CONFLICT (tenant_id, agent_id)
            DO UPDATE SET version = kb_namespace_versions.version + 1
        RETURNING 1
    )
    SELECT count(*), coalesce(array_agg(object_key), '{}') FROM gone
$$;
REVOKE ALL ON FUNCTION agentry_retention_files() FROM PUBLIC;
CREATE INDEX files_tenant_created_idx ON files (tenant_id, created_at);
