-- contact-sync store, version 2: the review queue (issue 13).
--
-- `conflicts` becomes the review queue: each row is an item of a kind, with the record as
-- the provider showed it, and the decision a `review` command wrote, which the next cycle
-- carries out. An item is open while it has neither a decision nor `resolved_at`.
ALTER TABLE conflicts ADD COLUMN kind TEXT NOT NULL DEFAULT 'ambiguous_match'
    CHECK (kind IN ('ambiguous_match', 'duplicate_in_provider', 'refused'));
ALTER TABLE conflicts ADD COLUMN record TEXT NOT NULL DEFAULT '{}';   -- JSON: field -> value as last shown
ALTER TABLE conflicts ADD COLUMN record_tags TEXT;                   -- JSON array; NULL = unknown
ALTER TABLE conflicts ADD COLUMN decision TEXT CHECK (decision IN ('merge', 'apart'));
ALTER TABLE conflicts ADD COLUMN decision_contact INTEGER;            -- `--keep` / `--link`
ALTER TABLE conflicts ADD COLUMN decided_at INTEGER;
ALTER TABLE conflicts ADD COLUMN history TEXT;                       -- JSON: what a merge replaced
UPDATE conflicts SET kind = 'duplicate_in_provider'
    WHERE reason LIKE 'the provider holds this person more than once%';
CREATE INDEX conflicts_open ON conflicts(resolved_at, decided_at);

-- People decided to be different people (`review apart`): the record linked to
-- `contact_id` shared `value` (of key `kind`) with `other_id`; that value never matches
-- them again, and a record pointing at both is never held for review again.
CREATE TABLE kept_apart (
    contact_id  INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    other_id    INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    decided_at  INTEGER NOT NULL,
    PRIMARY KEY (contact_id, other_id, kind, value)
) WITHOUT ROWID;
CREATE INDEX kept_apart_other ON kept_apart(other_id);

-- Fields of a link its provider keeps as it holds them: never written there, never read
-- into the person (the value another person shares, `review apart`).
CREATE TABLE link_pins (
    link_id  INTEGER NOT NULL REFERENCES links(id) ON DELETE CASCADE,
    field    TEXT NOT NULL,
    PRIMARY KEY (link_id, field)
) WITHOUT ROWID;

-- Records of one provider merged into another record of the same person there
-- (`review merge`). Never written, never deleted; a provider that can merge (Chatwoot)
-- is asked to merge it into `into_remote_id` (`remote_merge`), others keep it as is.
CREATE TABLE merged_records (
    provider_id     INTEGER NOT NULL REFERENCES providers(id),
    remote_id       TEXT NOT NULL,
    contact_id      INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    into_remote_id  TEXT NOT NULL,
    remote_merge    TEXT CHECK (remote_merge IN ('pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    merged_at       INTEGER NOT NULL,
    PRIMARY KEY (provider_id, remote_id)
) WITHOUT ROWID;
