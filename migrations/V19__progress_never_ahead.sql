-- sitewatch schema, version 19: scheduler progress never claims time its
-- writer had not reached.
--
-- Until now a shard's watermark (and a site's own row at a clean stop) was
-- the next slot not yet due: for an hourly site up to an hour ahead. True of
-- that site on that interval, but read by any site of the shard (one added
-- since, another config's) and by the same site on a new interval, it left
-- their slots up to that point neither checked nor recorded. Progress is now
-- capped at its writer's clock, and a watermark counts for a site only if it
-- was written after the site's own row (see `scheduler::seams::Stored`).
-- Rows written before this version are capped at the time they were written.
UPDATE schedule_watermarks SET accounted_until = updated_at
WHERE accounted_until > updated_at;
UPDATE schedule_progress SET accounted_until = updated_at
WHERE accounted_until > updated_at;
