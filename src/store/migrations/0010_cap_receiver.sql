-- A CAP alert is known per receiver: who pushed it (the user id, or `admin`) joins the
-- sender and identifier in its key, so nobody can pre-empt another feed's alert by
-- pushing a test alert with its sender and next identifier. Rows from before belonged to
-- the bootstrap admin, the only possible caller then.

CREATE TABLE cap_alerts_new (
    id           TEXT PRIMARY KEY NOT NULL,
    received_by  TEXT NOT NULL,
    sender       TEXT NOT NULL,
    identifier   TEXT NOT NULL,
    sent         TEXT NOT NULL,
    status       TEXT NOT NULL,
    msg_type     TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    broadcast_id TEXT,
    UNIQUE (received_by, sender, identifier)
);
INSERT INTO cap_alerts_new (id, received_by, sender, identifier, sent, status, msg_type,
                            received_at, outcome, broadcast_id)
    SELECT id, 'admin', sender, identifier, sent, status, msg_type, received_at, outcome,
           broadcast_id
    FROM cap_alerts;
DROP TABLE cap_alerts;
ALTER TABLE cap_alerts_new RENAME TO cap_alerts;
