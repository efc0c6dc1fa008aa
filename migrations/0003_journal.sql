-- contact-sync store: runs as cycles, and the journal (every change applied to a person and
-- every write sent, kept for `store.history_days`).

-- One row per cycle (a run): `contact-sync runs` lists them, and their ids grow with time
-- (AUTOINCREMENT: an id is never handed out twice). An undo is a run too.
CREATE TABLE cycles (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    ok           INTEGER,
    undo_of      INTEGER               -- the run this one undid
);

-- `runs` keeps one row per provider per cycle; each now points at its cycle.
ALTER TABLE runs ADD COLUMN cycle_id INTEGER REFERENCES cycles(id);
-- Rows written before this migration: the provider rows of one cycle share its start time.
INSERT INTO cycles (started_at, finished_at, ok)
    SELECT started_at, max(finished_at), min(ok) FROM runs GROUP BY started_at ORDER BY started_at;
UPDATE runs SET cycle_id = (SELECT c.id FROM cycles c WHERE c.started_at = runs.started_at);
CREATE INDEX runs_cycle ON runs(cycle_id);

-- The journal: one row per event on one person. `changes` is a JSON object
-- field -> [old, new] (null: absent; `tags`: [[old names], [new names]]).
CREATE TABLE journal (
    id           INTEGER PRIMARY KEY,
    contact_id   INTEGER NOT NULL,     -- no foreign key: the history outlives the contact
    run_id       INTEGER,              -- cycles.id
    at           INTEGER NOT NULL,     -- unix seconds
    provider_id  INTEGER,              -- NULL: contact-sync itself (an undo)
    kind         TEXT NOT NULL CHECK (kind IN ('changed_in', 'sent_to', 'merged', 'linked', 'gone')),
    op           TEXT,                 -- sent_to: create | update | tag_add | tag_remove | delete;
                                       -- linked: 'create' when the record became a new person
    remote_id    TEXT,
    outcome      TEXT,                 -- sent_to: NULL when it went through, else why not
    changes      TEXT                  -- JSON, see above
);
CREATE INDEX journal_contact ON journal(contact_id);
CREATE INDEX journal_run ON journal(run_id);
