-- sitewatch schema, version 12: evidence of a failed check.
--
-- A `down` check that got a response keeps what the site answered: the
-- status line, the response headers (cookie and credential values
-- redacted) and the first `checker.evidence_bytes` of the body, as
-- {"status_line", "headers": [[name, value], ...], "body", "body_truncated"}.
-- NULL for every other row. At most about 4 KiB of body plus 8 KiB of
-- headers per failed row (TOAST compresses the larger ones); raw retention
-- drops it with its partition. Metadata-only: no table rewrite.
ALTER TABLE check_results ADD COLUMN evidence jsonb;
