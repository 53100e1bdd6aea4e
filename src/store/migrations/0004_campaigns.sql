-- Campaigns: announcements aired on a calendar (cron rules in a timezone, a date window),
-- approved before they air. Each airing becomes a broadcast that names its campaign and
-- the instant it was planned for, so the as-run log shows planned against actual.

CREATE TABLE campaigns (
    id              TEXT PRIMARY KEY NOT NULL,
    title           TEXT NOT NULL,
    topic           TEXT NOT NULL,
    audio_ids       TEXT NOT NULL,          -- JSON array, in airing order
    targets         TEXT NOT NULL,          -- JSON {areas, clusters}, expanded at airing time
    schedule        TEXT NOT NULL,          -- JSON {cron, timezone, starts_on, ends_on}
    priority        TEXT NOT NULL,
    repeat          INTEGER NOT NULL,
    on_interrupt    TEXT NOT NULL,
    approval        TEXT NOT NULL,          -- pending | approved
    approved_at     TEXT,
    paused          INTEGER NOT NULL DEFAULT 0,
    source          TEXT NOT NULL,          -- api | file
    source_path     TEXT,                   -- for source = file
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    -- The latest planned instant the calendar has dealt with (aired, late or missed):
    -- written in the same transaction as that airing's broadcast, so a crash neither
    -- loses nor repeats an airing.
    last_planned_at TEXT NOT NULL
);

ALTER TABLE broadcasts ADD COLUMN campaign_id TEXT;
ALTER TABLE broadcasts ADD COLUMN planned_at TEXT;
ALTER TABLE broadcasts ADD COLUMN topic TEXT;
-- Aired after its planned instant (caught up after a restart): `late` instead of `done`.
ALTER TABLE broadcasts ADD COLUMN late INTEGER NOT NULL DEFAULT 0;
CREATE INDEX broadcasts_campaign ON broadcasts(campaign_id, planned_at);

-- Packet duration of the cluster at airing time: packets_sent x ptime_ms is airtime.
ALTER TABLE broadcast_clusters ADD COLUMN ptime_ms INTEGER NOT NULL DEFAULT 20;
