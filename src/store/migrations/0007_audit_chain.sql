-- The audit log becomes a hash chain (see src/audit_chain.rs): each row carries the hash
-- of the row before it and its own hash over (prev_hash, seq, at, actor, action, target,
-- detail, result). Rows from before this migration have NULL hashes until the store seals
-- them (Store::seal_audit, and every append), oldest first.
--
-- The triggers make the table append-only for anyone using the schema as shipped. Whoever
-- holds the file can drop them; the chain is what shows that rows were then changed.

ALTER TABLE audit ADD COLUMN prev_hash TEXT;
ALTER TABLE audit ADD COLUMN hash TEXT;

-- Sealing looks up the rows still without a hash on every append: normally just the new one.
CREATE INDEX audit_unsealed ON audit(seq) WHERE hash IS NULL;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be deleted');
END;

-- The one update allowed: sealing a row that has no hashes yet, leaving its content as is.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
WHEN NOT (
    OLD.prev_hash IS NULL AND OLD.hash IS NULL
    AND NEW.seq IS OLD.seq AND NEW.at IS OLD.at AND NEW.actor IS OLD.actor
    AND NEW.action IS OLD.action AND NEW.target IS OLD.target
    AND NEW.detail IS OLD.detail AND NEW.result IS OLD.result
)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: only an unsealed row may be sealed');
END;

-- INSERT OR REPLACE deletes the row it replaces without firing delete triggers (unless
-- recursive_triggers is on), so an insert may not name a seq that is taken.
CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
WHEN EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be replaced');
END;
