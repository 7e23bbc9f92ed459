-- sitewatch schema, version 14: what a dns:// check got. A JSON array of
-- strings: the response code, then one "TYPE data" per answer record
-- (["NOERROR", "A 192.0.2.1"]). NULL for the other kinds. Metadata-only.
ALTER TABLE check_results ADD COLUMN answers jsonb;
