-- Queues that live in PostgreSQL, for the metrics sampler: how many items
-- wait and since when, across tenants (row-level security would show the
-- sampler nothing). Counts and times only, never a row's content.
CREATE FUNCTION agentry_queue_depths()
RETURNS TABLE (queue text, backlog bigint, oldest timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT 'file_scan', count(*), min(created_at) FROM files WHERE scan_status = 'pending'
    UNION ALL
    SELECT 'sms_outbound', count(*), min(created_at) FROM sms_outbound WHERE state = 'pending'
$$;
REVOKE ALL ON FUNCTION agentry_queue_depths() FROM PUBLIC;
