-- contact-sync store, version 1: the whole model of DESIGN §4.
-- Keys inside the store are ordered integers (INTEGER PRIMARY KEY); provider ids are data
-- columns with their own unique index.

-- One row per configured provider instance (by name).
CREATE TABLE providers (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    -- contacts whose change sequence is above this still need planning for this provider
    planned_seq   INTEGER NOT NULL DEFAULT 0,
    -- unix seconds of the last complete enumeration / last successful cycle
    last_complete_at INTEGER,
    last_success_at  INTEGER
);

-- The golden record: one row per person.
CREATE TABLE contacts (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL DEFAULT '',
    first_name  TEXT NOT NULL DEFAULT '',
    last_name   TEXT NOT NULL DEFAULT '',
    email       TEXT NOT NULL DEFAULT '',   -- lower-cased when valid, raw text otherwise
    phone       TEXT NOT NULL DEFAULT '',   -- E.164 when valid, raw text otherwise
    phone_valid INTEGER NOT NULL DEFAULT 0, -- 1 when phone is valid E.164
    source_id   TEXT NOT NULL DEFAULT '',
    attrs       TEXT NOT NULL DEFAULT '{}', -- JSON object: custom attribute → text
    deleted     INTEGER NOT NULL DEFAULT 0, -- 1: deleted in a provider and propagate_deletes is on
    seq         INTEGER NOT NULL,           -- change sequence: bumped on every change
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX contacts_seq ON contacts(seq);

-- The contact's tag set. tag_key is trimmed + lower-cased; tag is the spelling kept.
CREATE TABLE contact_tags (
    contact_id  INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    tag_key     TEXT NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (contact_id, tag_key)
) WITHOUT ROWID;

-- Match keys: each (kind, value) points to at most one contact.
CREATE TABLE match_keys (
    kind        TEXT NOT NULL CHECK (kind IN ('source_id', 'phone', 'email')),
    value       TEXT NOT NULL,
    contact_id  INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE INDEX match_keys_contact ON match_keys(contact_id);

-- Links: (provider, remote id) → contact, with the snapshot of what that provider last
-- showed or was last sent.
CREATE TABLE links (
    id           INTEGER PRIMARY KEY,
    provider_id  INTEGER NOT NULL REFERENCES providers(id),
    contact_id   INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    remote_id    TEXT,                      -- NULL while state = 'creating' and unanswered
    state        TEXT NOT NULL CHECK (state IN ('active', 'creating', 'gone')),
    snapshot     TEXT NOT NULL DEFAULT '{}', -- JSON object: field → normalised value
    tags         TEXT,                       -- JSON array of tag names; NULL = unknown
    hash         INTEGER NOT NULL DEFAULT 0, -- content hash of what the provider last showed
    seen_at      INTEGER,                    -- unix seconds the provider last listed it
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX links_remote ON links(provider_id, remote_id) WHERE remote_id IS NOT NULL;
CREATE UNIQUE INDEX links_contact ON links(provider_id, contact_id);

-- Intents (the outbox): planned writes, persisted before they are sent.
CREATE TABLE intents (
    id              INTEGER PRIMARY KEY,
    provider_id     INTEGER NOT NULL REFERENCES providers(id),
    contact_id      INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    op              TEXT NOT NULL CHECK (op IN ('create', 'update', 'tag_add', 'tag_remove', 'delete')),
    payload         TEXT NOT NULL,           -- JSON
    state           TEXT NOT NULL CHECK (state IN ('pending', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX intents_due ON intents(provider_id, state, next_attempt_at);
CREATE INDEX intents_contact ON intents(contact_id);

-- Runs: one row per provider per cycle.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    provider_id  INTEGER NOT NULL REFERENCES providers(id),
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    ok           INTEGER,
    pulled       INTEGER NOT NULL DEFAULT 0,
    matched      INTEGER NOT NULL DEFAULT 0,
    created      INTEGER NOT NULL DEFAULT 0,
    updated      INTEGER NOT NULL DEFAULT 0,
    tag_changes  INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    error        TEXT
);
CREATE INDEX runs_provider ON runs(provider_id, id);

-- Conflicts: records whose keys point at two different contacts, held for review.
CREATE TABLE conflicts (
    id           INTEGER PRIMARY KEY,
    provider_id  INTEGER NOT NULL REFERENCES providers(id),
    remote_id    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    contact_ids  TEXT NOT NULL,              -- JSON array
    detected_at  INTEGER NOT NULL,
    resolved_at  INTEGER,
    UNIQUE (provider_id, remote_id)
);
