-- Fleet health: every status change of a cluster with its time and cause, kept after the
-- cluster is deleted (what was heard in the field is history).

CREATE TABLE health_transitions (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id  TEXT NOT NULL,
    area_code   TEXT NOT NULL,
    at          TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    cause       TEXT NOT NULL
);
CREATE INDEX health_transitions_cluster ON health_transitions(cluster_id, seq);
CREATE INDEX health_transitions_at ON health_transitions(at);
