-- contact-sync store: a targeted cycle (Chatwoot webhook events) is a run too.
-- `trigger` says what started a run: NULL for a scheduled or command-line cycle (and an
-- undo, which `undo_of` names), 'webhook' for a targeted cycle.
ALTER TABLE cycles ADD COLUMN trigger TEXT;
