-- sitewatch schema, version 9: which API token asked for an on-demand
-- check (a fingerprint of the token, never the token), so that only that
-- token can read its result. NULL for scheduled checks.
ALTER TABLE check_results ADD COLUMN requested_by text;
