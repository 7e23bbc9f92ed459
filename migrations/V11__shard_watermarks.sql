-- sitewatch schema, version 11: the scheduler's progress per shard, and the
-- late mark.
--
-- Until now the scheduler upserted `schedule_progress` for every site each
-- time its slot advanced: one more row write per check (16,700/s at 1M
-- sites every 60 s). Now it keeps one watermark per shard: every slot of
-- every site in the shard before `accounted_until` is delivered to Kafka or
-- recorded as skipped. It writes them every few seconds: writes scale with
-- shards, not checks.
--
-- `schedule_progress` stays, written once per site when an instance takes
-- the site on (its start, or the end of its backfill), and deleted when the
-- site leaves the config: a site without a row is new, and its history
-- starts at its first slot. A site's progress is the latest of its own row
-- and the watermark of its shard under every shard count on record (each is
-- a true statement, so the latest is too); that is how progress survives a
-- change of `scheduler.shards`.
CREATE TABLE schedule_watermarks (
    shards          integer     NOT NULL,   -- scheduler.shards when written
    shard           integer     NOT NULL,
    accounted_until timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shards, shard)
);

-- A check published more than a second after its slot (a slot caught up
-- after a restart, a takeover or a pause). Metadata-only: no table rewrite.
ALTER TABLE check_results ADD COLUMN late boolean NOT NULL DEFAULT false;
