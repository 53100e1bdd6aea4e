-- Emergencies (broadcasts at emergency priority) with their source, the CAP alerts
-- received (idempotent on sender + identifier), and the audit log of what changed what
-- airs. The security work chains the audit rows with hashes.

CREATE TABLE emergencies (
    broadcast_id   TEXT PRIMARY KEY NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    source         TEXT NOT NULL,            -- user | cap
    actor          TEXT NOT NULL,            -- the user, or the CAP sender
    interval_s     INTEGER NOT NULL,
    event          TEXT,
    cap_sender     TEXT,
    cap_identifier TEXT
);

CREATE TABLE cap_alerts (
    id           TEXT PRIMARY KEY NOT NULL,
    sender       TEXT NOT NULL,
    identifier   TEXT NOT NULL,
    sent         TEXT NOT NULL,
    status       TEXT NOT NULL,              -- Actual, Test, Exercise, System, Draft
    msg_type     TEXT NOT NULL,              -- Alert, Update, Cancel, Ack, Error
    received_at  TEXT NOT NULL,
    outcome      TEXT NOT NULL,              -- aired, not_aired, cancelled, ...
    broadcast_id TEXT,                       -- the emergency it aired as
    UNIQUE (sender, identifier)
);

CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    result TEXT NOT NULL
);
CREATE INDEX audit_at ON audit(at);
