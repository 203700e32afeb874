-- Change records (control-plane actions, allowed or denied) share the request records' table,
-- hash chains and verification; `kind` tells them apart.
ALTER TABLE audit_records ADD COLUMN kind TEXT NOT NULL DEFAULT 'request';
CREATE INDEX audit_records_kind ON audit_records (kind, recorded_at);
