-- Scheduler scale-out: sites are hashed into shards, and each shard is
-- leased to one live scheduler instance at a time. Leases live in Postgres
-- (one clock: the database's), are renewed every third of the lease time,
-- and are shared fairly among the live members.

CREATE TABLE scheduler_members (
    instance text PRIMARY KEY,
    seen_at  timestamptz NOT NULL
);

CREATE TABLE scheduler_leases (
    shard      int PRIMARY KEY,
    owner      text,
    -- Bumped on every change of owner: the fencing token.
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
);

-- One step of member `me` among `shards` shards with lease time `ttl`:
-- frees the shards in `release` (the caller has already stopped them),
-- renews the caller's other leases, and claims expired ones up to a fair
-- share. Returns the caller's leases; `excess` marks those above its fair
-- share, which the caller stops now and passes in `release` next time.
-- With `leaving`, frees everything and forgets the member.
CREATE FUNCTION sitewatch_scheduler_tick(me text, shards int, ttl interval,
                                         release int[], leaving boolean)
RETURNS TABLE (shard int, epoch bigint, excess boolean)
LANGUAGE plpgsql AS $$
DECLARE
    live int;
    fair int;
    mine int;
BEGIN
    INSERT INTO scheduler_leases (shard)
    SELECT g FROM generate_series(0, shards - 1) g
    ON CONFLICT DO NOTHING;

    UPDATE scheduler_leases l SET owner = NULL, expires_at = now()
    WHERE l.owner = me AND (leaving OR l.shard = ANY (release));
    IF leaving THEN
        DELETE FROM scheduler_members m WHERE m.instance = me;
        RETURN;
    END IF;

    INSERT INTO scheduler_members AS m (instance, seen_at) VALUES (me, now())
    ON CONFLICT (instance) DO UPDATE SET seen_at = now();
    DELETE FROM scheduler_members m WHERE m.seen_at < now() - ttl;
    SELECT count(*) INTO live FROM scheduler_members;
    fair := ceil(shards::numeric / greatest(live, 1));

    UPDATE scheduler_leases l SET expires_at = now() + ttl
    WHERE l.owner = me AND l.shard < shards;
    SELECT count(*) INTO mine FROM scheduler_leases l
    WHERE l.owner = me AND l.shard < shards;

    IF mine < fair THEN
        UPDATE scheduler_leases l
        SET owner = me, epoch = l.epoch + 1, expires_at = now() + ttl
        WHERE l.expires_at < now() AND l.shard IN (
            SELECT c.shard FROM scheduler_leases c
            WHERE c.shard < shards AND c.expires_at < now()
            ORDER BY c.shard
            LIMIT fair - mine
            FOR UPDATE SKIP LOCKED);
    END IF;

    RETURN QUERY
    SELECT l.shard, l.epoch,
           row_number() OVER (ORDER BY l.shard) > fair AS excess
    FROM scheduler_leases l
    WHERE l.owner = me AND l.shard < shards
    ORDER BY l.shard;
END
$$;
