-- Retrieval ranks full text in memory now (the retriever's lexical index,
-- built from the chunks it loads), so PostgreSQL no longer keeps a full-text
-- index, lexeme statistics or the search function that used them: ingestion
-- stops paying for them on every document.
DROP FUNCTION agentry_kb_lexical_search(uuid, text, tsquery, integer);
DROP TABLE kb_lexemes;
ALTER TABLE kb_namespace_versions DROP COLUMN chunks;
DROP INDEX kb_chunks_namespace_search_idx;
ALTER TABLE kb_chunks DROP COLUMN search;
DROP EXTENSION IF EXISTS btree_gin;
