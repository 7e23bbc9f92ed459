-- sitewatch schema, version 15: alert channels. The outbox holds one row
-- per event and channel, so a failing channel retries on its own while the
-- others deliver. Rows queued before channels existed belong to the
-- channel the `alerts.webhook_url` shorthand now defines, `default`.
ALTER TABLE alert_outbox ADD COLUMN channel text NOT NULL DEFAULT 'default';
ALTER TABLE alert_outbox ALTER COLUMN channel DROP DEFAULT;
DROP INDEX alert_outbox_due;
CREATE INDEX alert_outbox_due ON alert_outbox (channel, due_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- What the channel answered (status line or SMTP reply and the start of the
-- body), secrets removed; for an operator reading why a delivery failed.
ALTER TABLE alert_deliveries ADD COLUMN answer text;
