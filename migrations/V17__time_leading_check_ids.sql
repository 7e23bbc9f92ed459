-- sitewatch schema, version 17: scheduled check ids lead with their slot's
-- time (a UUIDv8: 48 bits of Unix milliseconds, then a hash of site and
-- slot; see src/model/check_id.rs), so the primary key (check_id,
-- scheduled_at) grows at its right edge instead of taking each insert on a
-- random leaf page. Rows already stored keep their ids.
--
-- A slot keeps one id whichever build handles it: builds before this one
-- give every slot a UUIDv5, this one gives slots before time_leading_from
-- the same UUIDv5. The cutover is an hour after the upgrade when results
-- exist, so a rolling upgrade (older schedulers and persisters still
-- running beside newer ones) records each slot once if it ends within the
-- hour; on an empty store every slot gets the new ids.
CREATE TABLE check_id_scheme (
    only_row          boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    time_leading_from timestamptz NOT NULL
);

INSERT INTO check_id_scheme (time_leading_from)
SELECT CASE WHEN EXISTS (SELECT 1 FROM check_results)
            THEN date_trunc('minute', now()) + interval '1 hour'
            ELSE 'epoch'::timestamptz END;
