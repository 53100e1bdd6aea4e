-- A cluster's agent token, kept only as its SHA-256 (hex). For `registered` clusters
-- the same digest keys the HMAC of their keepalives.
ALTER TABLE clusters ADD COLUMN agent_key TEXT;
