-- sitewatch schema, version 7: why an incident was resolved. A check that
-- passes resolves it ('recovered'); a site that left the config or was
-- disabled can never pass again, so its open incident is resolved when the
-- evaluator sees that ('site removed', 'site disabled').
ALTER TABLE incidents ADD COLUMN resolution text
    CHECK (resolution IN ('recovered', 'site removed', 'site disabled'));
UPDATE incidents SET resolution = 'recovered' WHERE resolved_at IS NOT NULL;
