-- Tenants' files: brochures, price sheets, forms. The bytes live in the object
-- store, sealed in 64 KiB AES-256-GCM segments under a per-file data key; the
-- data key is sealed by the keyring with this row bound in. A file is
-- 'pending' until clamd scanned it, then 'clean' or 'infected'; 'unscanned'
-- when scanning is off. Only clean and unscanned files are ever served.

CREATE TABLE files (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    -- Of the plaintext.
    size_bytes        bigint NOT NULL CHECK (size_bytes >= 0),
    -- Told from the bytes at upload, never the client's claim.
    content_type      text NOT NULL CHECK (content_type ~ '^[a-z0-9.+-]+/[a-z0-9.+-]+$'),
    object_key        text NOT NULL,
    -- The per-file data key, sealed (Keyring::seal, owner files.data_key of this row).
    data_key          bytea NOT NULL,
    -- The segments' nonce prefix (7 random bytes; counter and last flag follow).
    nonce_prefix      bytea NOT NULL CHECK (length(nonce_prefix) = 7),
    scan_status       text NOT NULL CHECK (scan_status IN ('pending', 'clean', 'infected', 'unscanned')),
    -- clamd's name for what it found (infected only).
    scan_signature    text,
    scanned_at        timestamptz,
    -- A scan in hand: which instance claimed it, and until when it is theirs.
    scan_claimed_by   uuid,
    scan_lease_until  timestamptz,
    -- Attached to this agent's knowledge base once clean (or unscanned).
    agent_id          uuid,
    kb_document_id    uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id),
    -- No foreign key to agents: deleting an agent leaves the tenant's files.
    CHECK ((scan_status = 'infected') = (scan_signature IS NOT NULL))
);
-- Newest first (ids are UUIDv7, time-ordered).
CREATE INDEX files_tenant_idx ON files (tenant_id, id DESC);
CREATE INDEX files_pending_idx ON files (scan_lease_until NULLS FIRST) WHERE scan_status = 'pending';
CALL agentry_isolate_by_tenant('files');

-- Signed links to one file. A link's signature covers its id, file, tenant
-- and expiry; revocation and expiry are read from here on every download, so
-- they hold on every instance at once.
CREATE TABLE file_shares (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    file_id     uuid NOT NULL,
    -- NULL: permanent (until revoked).
    expires_at  timestamptz,
    revoked_at  timestamptz,
    created_by  uuid NOT NULL,
    -- The customer the link is for, when there is one (privacy export/erasure finds it by this).
    lead_id     uuid REFERENCES leads (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (file_id, tenant_id) REFERENCES files (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX file_shares_file_idx ON file_shares (tenant_id, file_id, id DESC);
CREATE INDEX file_shares_lead_idx ON file_shares (tenant_id, lead_id) WHERE lead_id IS NOT NULL;
CALL agentry_isolate_by_tenant('file_shares');

-- The scan worker's claim, across tenants: pending files nobody holds, or
-- whose holder's lease ran out (it died mid-scan), are leased to p_claimer.
CREATE FUNCTION agentry_claim_pending_files(p_claimer uuid, p_lease interval, p_limit integer)
RETURNS TABLE (tenant_id uuid, file_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE files f SET scan_claimed_by = p_claimer, scan_lease_until = now() + p_lease
    WHERE f.id IN (
        SELECT id FROM files
        WHERE scan_status = 'pending' AND (scan_lease_until IS NULL OR scan_lease_until < now())
        ORDER BY scan_lease_until NULLS FIRST, id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING f.tenant_id, f.id
$$;
REVOKE ALL ON FUNCTION agentry_claim_pending_files(uuid, interval, integer) FROM PUBLIC;

-- A share link presented with no sign-in: what its signature must cover, and
-- whether it still holds.
CREATE FUNCTION agentry_find_file_share(p_share uuid)
RETURNS TABLE (tenant_id uuid, file_id uuid, expires_at timestamptz, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT s.tenant_id, s.file_id, s.expires_at, s.revoked_at FROM file_shares s WHERE s.id = p_share
$$;
REVOKE ALL ON FUNCTION agentry_find_file_share(uuid) FROM PUBLIC;
