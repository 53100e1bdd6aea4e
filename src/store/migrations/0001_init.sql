-- The first schema of loaxa: the area tree, clusters, the audio library and the
-- broadcasts with their per-cluster as-run rows.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE areas (
    code        TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    parent_code TEXT REFERENCES areas(code) ON DELETE RESTRICT,
    created_at  TEXT NOT NULL
);
CREATE INDEX areas_parent ON areas(parent_code);

CREATE TABLE clusters (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    area_code  TEXT NOT NULL REFERENCES areas(code) ON DELETE RESTRICT,
    codec      TEXT NOT NULL,
    ptime_ms   INTEGER NOT NULL,
    endpoint   TEXT NOT NULL,            -- JSON, validated on the way in
    volume     INTEGER NOT NULL DEFAULT 100,
    enabled    INTEGER NOT NULL DEFAULT 1,
    sdp_session_id INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX clusters_area ON clusters(area_code);

CREATE TABLE audio (
    id            TEXT PRIMARY KEY NOT NULL,
    title         TEXT NOT NULL,
    topic         TEXT,
    original_name TEXT,
    file_name     TEXT NOT NULL,        -- under data_dir/audio
    format        TEXT NOT NULL,
    codec         TEXT NOT NULL,
    sample_rate   INTEGER NOT NULL,
    channels      INTEGER NOT NULL,
    duration_ms   INTEGER NOT NULL,
    loudness_lufs REAL,
    true_peak_dbtp REAL,
    size_bytes    INTEGER NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE broadcasts (
    id         TEXT PRIMARY KEY NOT NULL,
    status     TEXT NOT NULL,
    priority   TEXT NOT NULL,
    repeat     INTEGER NOT NULL,
    audio_ids  TEXT NOT NULL,           -- JSON array, in airing order
    targets    TEXT NOT NULL,           -- JSON, as requested
    detail     TEXT,                    -- why it failed or was interrupted
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at   TEXT
);
CREATE INDEX broadcasts_created ON broadcasts(created_at);

-- One row per cluster a broadcast was sent to. The cluster may be deleted later; the
-- as-run row keeps its id, name and area as they were.
CREATE TABLE broadcast_clusters (
    broadcast_id TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    cluster_id   TEXT NOT NULL,
    cluster_name TEXT NOT NULL,
    area_code    TEXT NOT NULL,
    status       TEXT NOT NULL,
    packets_sent INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT,
    ended_at     TEXT,
    PRIMARY KEY (broadcast_id, cluster_id)
);
CREATE INDEX broadcast_clusters_cluster ON broadcast_clusters(cluster_id);
