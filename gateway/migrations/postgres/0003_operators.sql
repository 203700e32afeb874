-- Operators: the identities that may use the management API. Service tokens are stored as the
-- keyed hash of the token (HMAC-SHA-256 under the server secret, hex), never the token. Roles
-- are a space-separated subset of viewer, editor, admin, auditor.
CREATE TABLE operators (
    id          TEXT NOT NULL PRIMARY KEY,
    roles       TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
