-- sitewatch schema, version 20: the time spent judging a response.
--
-- Judging (decoding the body, every assertion, the evidence) now runs off
-- the checker's async workers, within the check's deadline and bounded
-- budgets. `response_time_ms` and `finished_at` keep meaning the exchange;
-- this column says how long judging took, so a costly assertion shows.
ALTER TABLE check_results ADD COLUMN judge_ms double precision;
