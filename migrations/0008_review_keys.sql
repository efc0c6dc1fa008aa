-- contact-sync store: the match keys of records held for review (issue 13).
--
-- A record held as `ambiguous_match` or `duplicate_in_provider` is linked to nobody, so
-- its keys are in no contact's `match_keys`. They are kept here, normalised as matching
-- sees them, so that another provider's record carrying one of them (the held family
-- member's email, say) is held too instead of being linked to the person its phone names.
-- Rows are replaced whenever the record is held again; those of a resolved item are
-- ignored (the join on `conflicts`).
CREATE TABLE review_keys (
    provider_id  INTEGER NOT NULL REFERENCES providers(id),
    remote_id    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('source_id', 'phone', 'email')),
    value        TEXT NOT NULL,
    PRIMARY KEY (kind, value, provider_id, remote_id)
) WITHOUT ROWID;
CREATE INDEX review_keys_record ON review_keys(provider_id, remote_id);
