-- contact-sync store, version 5: refusals become items (issue 13, point 3), and what a
-- merge decided is kept for `review show`.

-- The people a `refused` item holds back in its provider: a write of `contact_id` was
-- refused there because the item's record holds `fields` (JSON array of field names).
-- Nothing more is sent for that person in that provider while the item is not resolved.
CREATE TABLE refusals (
    item_id     INTEGER NOT NULL REFERENCES conflicts(id) ON DELETE CASCADE,
    contact_id  INTEGER NOT NULL,
    fields      TEXT NOT NULL,
    PRIMARY KEY (item_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX refusals_contact ON refusals(contact_id);

-- Fields a provider refused to hold for a person because another of its records, a
-- different person's (`review apart`), holds the same value: never sent there while the
-- person's value is still `value`.
CREATE TABLE withheld_fields (
    provider_id  INTEGER NOT NULL REFERENCES providers(id),
    contact_id   INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    field        TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (provider_id, contact_id, field)
) WITHOUT ROWID;

-- The person a carried-out `review merge` kept (the others were folded into it).
ALTER TABLE conflicts ADD COLUMN survivor INTEGER;
