-- Request records: one per data-plane request, hash-chained per node. `body` is the record as
-- JSON, exactly as hashed: hash = SHA-256(prev_hash || '\n' || body), hex. The other columns
-- copy fields of the body for filtering.
CREATE TABLE audit_records (
    node        TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    recorded_at TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    reason      TEXT,
    status      INTEGER NOT NULL,
    client      TEXT,
    profile     TEXT,
    partner     TEXT,
    collection  TEXT,
    operation   TEXT,
    body        TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX audit_records_time ON audit_records (recorded_at, node, seq);
CREATE INDEX audit_records_client ON audit_records (client, recorded_at);
CREATE INDEX audit_records_collection ON audit_records (collection, recorded_at);
