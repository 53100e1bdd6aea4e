-- Live relays ("tiếp sóng"): a broadcast or campaign may air a remote stream instead of
-- announcements. `relay` is JSON {url, duration_s, fallback_audio_id?}; NULL otherwise.
ALTER TABLE broadcasts ADD COLUMN relay TEXT;
ALTER TABLE campaigns ADD COLUMN relay TEXT;

-- What happened to a relay while it aired (connected, faults, reconnects, fallback, end),
-- part of the as-run log of its broadcast.
CREATE TABLE relay_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    broadcast_id TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX relay_events_by_broadcast ON relay_events (broadcast_id, id);
