-- WAL per inserted row into a (uuid, timestamptz) primary key of 15M rows,
-- right after a checkpoint: random ids against time-ordered ones (the check
-- ids before and after migration V17). Run on a scratch database:
--   psql postgres://sitewatch@127.0.0.1:55432/sitewatch -f bench/wal_keys.sql
-- About 3 minutes on 2 cores; prints bytes of WAL per row for each.
DROP TABLE IF EXISTS walx;
CREATE TABLE walx (id uuid, t timestamptz, site text, v float8, PRIMARY KEY (id, t));
INSERT INTO walx SELECT gen_random_uuid(), now(), 'site' || (g % 27000), g FROM generate_series(1, 15000000) g;
CHECKPOINT;
SELECT pg_current_wal_lsn() AS a \gset
INSERT INTO walx SELECT gen_random_uuid(), now(), 'site' || (g % 27000), g FROM generate_series(1, 300000) g;
SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), :'a')) AS random_300k, pg_wal_lsn_diff(pg_current_wal_lsn(), :'a') / 300000 AS b_per_row;
CHECKPOINT;
SELECT pg_current_wal_lsn() AS a \gset
INSERT INTO walx SELECT ('019d0000' || lpad(to_hex(g), 24, '0'))::uuid, now(), 'site' || (g % 27000), g FROM generate_series(1, 300000) g;
SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), :'a')) AS ordered_300k, pg_wal_lsn_diff(pg_current_wal_lsn(), :'a') / 300000 AS b_per_row;
DROP TABLE walx;
