-- What becomes of a broadcast when a higher priority cuts in, and the record of each
-- interruption per cluster.

ALTER TABLE broadcasts ADD COLUMN on_interrupt TEXT NOT NULL DEFAULT 'restart';

CREATE TABLE broadcast_interruptions (
    broadcast_id TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    cluster_id   TEXT NOT NULL,
    at           TEXT NOT NULL,
    by_broadcast TEXT NOT NULL,
    policy       TEXT NOT NULL,
    at_ms        INTEGER NOT NULL           -- how far into the programme it was cut
);
CREATE INDEX broadcast_interruptions_broadcast ON broadcast_interruptions(broadcast_id);
