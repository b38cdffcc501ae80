-- Call recordings: Twilio's own recordings (fetched from its recording status
-- callback) and the caller's audio captured by the media-stream bridge. The
-- audio lives in the object store, sealed (AES-256-GCM) with this row's id
-- bound in; a row never names an object that was not written first.

CREATE TABLE call_recordings (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The call's conversation, when the call reached the agent (found by CallSid).
    conversation_id  uuid,
    call_sid         text NOT NULL CHECK (call_sid ~ '^CA[0-9a-f]{32}$'),
    -- Twilio's RecordingSid (RE…) or the media stream's StreamSid (MZ…): a
    -- callback Twilio repeats stores nothing twice.
    recording_sid    text NOT NULL CHECK (recording_sid ~ '^(RE|MZ)[0-9a-f]{32}$'),
    object_key       text NOT NULL,
    content_type     text NOT NULL CHECK (content_type ~ '^audio/[a-z0-9.+-]+$'),
    -- Of the audio, not of its ciphertext.
    size_bytes       bigint NOT NULL CHECK (size_bytes >= 0),
    duration_secs    integer CHECK (duration_secs >= 0),
    source           text NOT NULL CHECK (source IN ('twilio', 'media_stream')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, tenant_id),
    UNIQUE (tenant_id, recording_sid),
    -- CASCADE, not SET NULL: SET NULL on a composite key would null tenant_id
    -- too (SET NULL (column) needs PostgreSQL 15; we support 13).
    FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id) ON DELETE CASCADE
);
-- Newest first (ids are UUIDv7, time-ordered).
CREATE INDEX call_recordings_tenant_idx ON call_recordings (tenant_id, id DESC);
CALL agentry_isolate_by_tenant('call_recordings');
