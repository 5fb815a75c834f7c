-- noreboot-server schema, version 6: webhooks.
--
-- A webhook is a URL the server POSTs events to, signed with HMAC-SHA256
-- under its secret. The secret must be kept as it is (the server signs
-- with it), unlike the hashed tokens; lists show its first characters.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    events     TEXT NOT NULL,                    -- JSON array of event names
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    deleted_at BIGINT,
    deleted_by TEXT
);

-- The outbox: one row per event and webhook, written in the transaction
-- that learnt of the event, delivered by a background task (so pending
-- deliveries survive a restart). A row ends delivered or given up.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,            -- sent as X-Noreboot-Delivery
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,               -- the JSON sent, byte for byte
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    lease_until     BIGINT,                      -- a process is delivering it until then
    delivered_at    BIGINT,
    failed_at       BIGINT,
    last_error      TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_open ON webhook_deliveries (delivered_at, failed_at, created_at);

-- Hosts known to breach the compliance policy, so that crossing it is
-- notified once (and crossing back once).
CREATE TABLE policy_breaches (
    host_id TEXT PRIMARY KEY REFERENCES hosts (id),
    since   BIGINT NOT NULL
);
