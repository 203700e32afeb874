-- Configuration objects, one row each, as JSON documents. `parent` is the owning object's id
-- ('' for collections and clients; the collection for operations; the client for profiles;
-- 'client/profile' for credentials). `revision` is the configuration version that last wrote it.
CREATE TABLE config_objects (
    kind     TEXT   NOT NULL,
    parent   TEXT   NOT NULL,
    id       TEXT   NOT NULL,
    body     TEXT   NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (kind, parent, id)
);

-- The configuration version: one row, incremented by every commit that changes something.
CREATE TABLE config_version (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    version   BIGINT  NOT NULL
);
INSERT INTO config_version (singleton, version) VALUES (1, 0);
