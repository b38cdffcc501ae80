-- A recording's transcript, from the tenant's own model when transcription
-- is on: stored scrubbed like a call's live lines (its audits go with the
-- call's conversation).
ALTER TABLE call_recordings
    ADD COLUMN transcript text,
    ADD COLUMN transcribed_at timestamptz;
