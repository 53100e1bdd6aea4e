-- Users and their tokens: a role, an area scope (a subtree; NULL for a global admin), an
-- optional approve right. Only the SHA-256 of each token (256 random bits) is kept.
-- Revoked and expired tokens stay, so the audit log's actors keep a name.

CREATE TABLE users (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,               -- admin, operator, officer, technician, agent
    area_code   TEXT REFERENCES areas(code),
    cluster_id  TEXT,                        -- role agent: the one cluster it speaks for
    can_approve INTEGER NOT NULL DEFAULT 0,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
