-- contact-sync store: Chatwoot webhooks (near-real-time changes).
-- Providers are named by their instance name here: an event may be accepted before the
-- first cycle has written the provider's row.

-- Events accepted (answered 202) and not yet applied: the durable queue. A row is
-- deleted only after the targeted cycle that read its record has finished, so an event
-- accepted before a crash is applied after the restart.
CREATE TABLE webhook_events (
    id              INTEGER PRIMARY KEY,
    provider        TEXT NOT NULL,
    remote_id       TEXT NOT NULL,
    event           TEXT NOT NULL,             -- contact_created | contact_updated
    fields          TEXT NOT NULL DEFAULT '{}', -- the payload's contact as fields (JSON)
    received_at     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0, -- targeted cycles that could not read it
    next_attempt_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_events_due ON webhook_events(next_attempt_at, id);

-- Delivery ids seen (`X-Chatwoot-Delivery`, the same across Chatwoot's retries): a
-- repeated delivery is answered 200 and queues nothing. Kept for a day.
CREATE TABLE webhook_deliveries (
    provider    TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, delivery_id)
) WITHOUT ROWID;
CREATE INDEX webhook_deliveries_age ON webhook_deliveries(received_at);
