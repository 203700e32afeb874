-- Nodes follow configuration changes by reading only what a version changed: the objects
-- written since (by `revision`) and those deleted since, recorded here with the version that
-- deleted them. An object created again has its row in config_objects, which wins.
CREATE TABLE config_deletions (
    kind     TEXT   NOT NULL,
    parent   TEXT   NOT NULL,
    id       TEXT   NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (kind, parent, id)
);
CREATE INDEX config_deletions_revision ON config_deletions (revision);
CREATE INDEX config_objects_revision ON config_objects (revision);
-- Credential ids are unique across clients: a change confined to one client's credentials
-- checks a new id against the others' by this index, without reading them.
CREATE INDEX config_objects_kind_id ON config_objects (kind, id);
