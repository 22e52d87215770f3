-- The partner API's housekeeping: answers kept for an `Idempotency-Key` are deleted after
-- `[api] idempotency_hours`, oldest first, and expired access tokens after they expire.
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
CREATE INDEX api_access_tokens_expires ON api_access_tokens (expires_at);
