//! Migrations, partitions and the `sites` sync against a real Postgres.

use chrono::DurationRound as _;
use sitewatch::store;

use crate::support::{TestConfig, TestDb};

#[tokio::test]
async fn migrations_apply_once_and_create_partitions() {
    let db = TestDb::create().await;
    let mut client = db.client().await;

    let first = store::migrate(&mut client).await.unwrap();
    assert_eq!(
        first.applied,
        [
            "V1__initial_schema",
            "V2__pipeline",
            "V3__scheduler_leases",
            "V4__rich_checks",
            "V5__rollups",
            "V6__incidents",
            "V7__incident_resolution",
            "V8__on_demand_key",
            "V9__requested_by",
            "V10__rollup_sketches",
            "V11__shard_watermarks",
            "V12__evidence",
            "V13__check_kind",
            "V14__dns_answers",
            "V15__alert_channels",
            "V16__site_uptime_daily",
            "V17__time_leading_check_ids",
        ]
    );
    // Yesterday through PARTITION_DAYS_AHEAD days ahead.
    assert_eq!(first.partitions_created, store::PARTITION_DAYS_AHEAD + 2);

    let second = store::migrate(&mut client).await.unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.partitions_created, 0);

    let parts: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'check_results'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, i64::from(store::PARTITION_DAYS_AHEAD) + 2);
}

#[tokio::test]
async fn concurrent_migrations_apply_each_version_once() {
    let db = TestDb::create().await;
    let mut a = db.client().await;
    let mut b = db.client().await;
    let (ra, rb) = tokio::join!(store::migrate(&mut a), store::migrate(&mut b));
    let total = ra.unwrap().applied.len() + rb.unwrap().applied.len();
    let files = std::fs::read_dir("migrations").unwrap().count();
    assert_eq!(total, files, "each migration applied exactly once");
}

/// V17 on an empty store gives every slot a time-leading id; on a store
/// with results, slots keep their old ids until an hour after the upgrade,
/// so a rolling upgrade records each slot under one id.
#[tokio::test]
async fn time_leading_check_ids_start_an_hour_after_an_upgrade_with_results() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    let ids = store::check_ids(&client).await.unwrap();
    assert_eq!(ids, sitewatch::model::CheckIds::TIME_LEADING);

    // The same store upgraded with a result already in it.
    client
        .batch_execute(
            "DROP TABLE check_id_scheme;
             DELETE FROM refinery_schema_history WHERE version = 17;
             INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome)
             VALUES (gen_random_uuid(), 's', 'https://s/', 'scheduled', now(), 'up');",
        )
        .await
        .unwrap();
    let before = chrono::Utc::now();
    let report = store::migrate(&mut client).await.unwrap();
    assert_eq!(report.applied, ["V17__time_leading_check_ids"]);
    let cut = store::check_ids(&client).await.unwrap().time_leading_from;
    let hour = chrono::Duration::hours(1);
    assert!(
        cut >= before + hour - chrono::Duration::minutes(1) && cut <= chrono::Utc::now() + hour,
        "cutover {cut} is about an hour after {before}"
    );
    let ids = store::check_ids(&client).await.unwrap();
    let old = ids.scheduled("s", cut - chrono::Duration::seconds(1));
    let new = ids.scheduled("s", cut);
    assert_eq!(old.get_version_num(), 5);
    assert_eq!(new.get_version_num(), 8);
}

/// A site's slots shed in one minute are one `schedule_gaps` row and a
/// `skipped` count in each rollup, beside the minute's checked rows;
/// writing the runs again changes nothing.
#[tokio::test]
async fn shed_runs_are_one_gap_row_and_count_as_skipped_in_the_rollups() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    let minute = chrono::Utc::now()
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let s = |secs: i64| minute + chrono::Duration::seconds(secs);
    let (_, real) = crate::support::slot_outcomes("s", s(0), "http://s.test/");
    store::insert_results(&client, &[real]).await.unwrap();
    let runs = [("s", s(5), s(65), 12), ("t", s(7), s(22), 3)];
    store::record_shed(&client, &runs).await.unwrap();
    store::record_shed(&client, &runs).await.unwrap();
    let gaps = client
        .query(
            "SELECT site, slots, reason FROM schedule_gaps ORDER BY site",
            &[],
        )
        .await
        .unwrap();
    let gaps: Vec<(String, i64, String)> = gaps
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        gaps,
        [
            ("s".into(), 12, "load_shed".into()),
            ("t".into(), 3, "load_shed".into())
        ]
    );
    for table in ["rollup_minute", "rollup_hour"] {
        let rows = client
            .query(
                &format!("SELECT site, checks::int8, skipped::int8 FROM {table} ORDER BY site"),
                &[],
            )
            .await
            .unwrap();
        let rows: Vec<(String, i64, i64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(rows, [("s".into(), 1, 12), ("t".into(), 0, 3)], "{table}");
    }
}

#[tokio::test]
async fn dropping_partitions_removes_exactly_the_old_days() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    client
        .batch_execute(
            "SELECT sitewatch_ensure_partitions(DATE '2020-01-01', DATE '2020-01-05');
             INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome)
             SELECT gen_random_uuid(), 's', 'https://s/', 'scheduled',
                    TIMESTAMPTZ '2020-01-01 12:00Z' + d * INTERVAL '1 day', 'up'
             FROM generate_series(0, 4) AS d;",
        )
        .await
        .unwrap();
    let dropped: Vec<String> = client
        .query(
            "SELECT sitewatch_drop_partitions_before(DATE '2020-01-03')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        dropped,
        ["check_results_20200101", "check_results_20200102"]
    );
    let left: Vec<String> = client
        .query(
            "SELECT to_char(scheduled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM check_results
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["2020-01-03", "2020-01-04", "2020-01-05"]);
}

#[tokio::test]
async fn sites_table_follows_the_config() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();

    let cfg = TestConfig::new(
        &db,
        r#"
[[sites]]
name = "a"
url = "https://a.example/"
[[sites]]
name = "b"
url = "https://b.example/"
interval = "30s"
"#,
    );
    let r = store::sync_sites(&mut client, &cfg.load().sites)
        .await
        .unwrap();
    assert_eq!((r.added, r.changed, r.removed), (2, 0, 0));

    // Same config again: nothing to do.
    let r = store::sync_sites(&mut client, &cfg.load().sites)
        .await
        .unwrap();
    assert_eq!((r.added, r.changed, r.removed), (0, 0, 0));

    // b changes, a goes, c arrives.
    cfg.set_sites(
        r#"
[[sites]]
name = "b"
url = "https://b.example/"
interval = "45s"
[[sites]]
name = "c"
url = "https://c.example/"
"#,
    );
    let r = store::sync_sites(&mut client, &cfg.load().sites)
        .await
        .unwrap();
    assert_eq!((r.added, r.changed, r.removed), (1, 1, 1));

    let rows = client
        .query(
            "SELECT name, in_config, enabled, interval_ms FROM sites ORDER BY name",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, bool, bool, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        [
            ("a".to_owned(), false, false, 60_000),
            ("b".to_owned(), true, true, 45_000),
            ("c".to_owned(), true, true, 60_000),
        ]
    );
}

#[tokio::test]
async fn a_batch_holding_one_check_twice_makes_one_row_and_the_real_outcome_wins() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    sitewatch::store::migrate(&mut client).await.unwrap();
    let (skipped, up) =
        crate::support::slot_outcomes("twice", chrono::Utc::now(), "http://example.test/");
    let written = sitewatch::store::insert_results(&client, &[skipped.clone(), up, skipped])
        .await
        .unwrap();
    assert_eq!(written, 1);
    let rows = client
        .query(
            "SELECT outcome FROM check_results WHERE site = 'twice'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "up");
}

/// Rollups are maintained by the statements that write the raw rows, and
/// equal what the raw rows give for the same window: counts per outcome and
/// response-time percentiles, across minutes and hours, with placeholders
/// replaced by late real results, redeliveries and skipped backfills.
#[tokio::test]
async fn minute_and_hour_rollups_equal_the_raw_rows() {
    use sitewatch::model::{Outcome, TlsDetails};
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    let base = chrono::Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap();
    let mut batches: Vec<Vec<sitewatch::model::CheckOutcome>> = vec![Vec::new(); 4];
    let mut backfill = Vec::new();
    // Two sites, a slot every 20 s for 2.5 hours.
    for site in ["r1", "r2"] {
        for k in 0..450i64 {
            let slot = base - chrono::Duration::minutes(30) + chrono::Duration::seconds(20 * k);
            let (skipped, mut real) = crate::support::slot_outcomes(site, slot, "http://r.test/");
            real.response_time_ms = Some(((k * 37) % 500) as f64 + 0.25);
            real.outcome = match k % 7 {
                0 => Outcome::Down,
                3 => Outcome::Degraded,
                _ => Outcome::Up,
            };
            real.tls = (k % 2 == 0).then(|| TlsDetails {
                not_after: slot,
                days_left: 1.0,
                subject: "s".into(),
                issuer: "i".into(),
                version: None,
            });
            match k % 10 {
                // A placeholder first, the real result later: replaced.
                0 | 1 => {
                    batches[0].push(skipped);
                    batches[2].push(real.clone());
                    batches[3].push(real); // redelivered: no change
                }
                // Only skipped (by the scheduler's backfill).
                2 => backfill.push(store::SkippedSlot {
                    check_id: real.check_id,
                    site: site.into(),
                    url: real.url.clone(),
                    scheduled_at: slot,
                    kind: "missed_slot",
                    message: "scheduler was not running".into(),
                }),
                _ => batches[1].push(real),
            }
        }
    }
    for batch in &batches {
        store::insert_results(&client, batch).await.unwrap();
    }
    store::insert_skipped(&client, &backfill).await.unwrap();
    store::insert_skipped(&client, &backfill).await.unwrap(); // again: nothing new

    for (table, unit) in [("rollup_minute", "minute"), ("rollup_hour", "hour")] {
        // Counts must be equal; percentiles within the sketch's 1 % of the
        // exact order statistic of rank floor(q * (n - 1)) (migration V10).
        let sql = format!(
            "WITH raw AS (
                 SELECT site, date_trunc('{unit}', scheduled_at) AS bucket,
                        count(*) FILTER (WHERE outcome <> 'skipped') AS checks,
                        count(*) FILTER (WHERE outcome = 'up') AS up,
                        count(*) FILTER (WHERE outcome = 'degraded') AS degraded,
                        count(*) FILTER (WHERE outcome = 'down') AS down,
                        count(*) FILTER (WHERE outcome = 'skipped') AS skipped,
                        array_agg(response_time_ms ORDER BY response_time_ms)
                            FILTER (WHERE response_time_ms IS NOT NULL) AS rt
                 FROM check_results GROUP BY 1, 2),
             exact AS (
                 SELECT site, bucket, checks, up, degraded, down, skipped,
                        rt[floor(0.50 * (cardinality(rt) - 1))::int + 1] AS p50,
                        rt[floor(0.95 * (cardinality(rt) - 1))::int + 1] AS p95,
                        rt[floor(0.99 * (cardinality(rt) - 1))::int + 1] AS p99
                 FROM raw),
             rolled AS (
                 SELECT site, bucket, checks::int8, up::int8, degraded::int8, down::int8,
                        skipped::int8, p.p50, p.p95, p.p99
                 FROM {table}, sitewatch_percentiles(rt_sketch) p),
             far AS (
                 SELECT count(*) AS n FROM exact e JOIN rolled r USING (site, bucket)
                 WHERE abs(r.p50 - e.p50) > 0.01 * e.p50 OR abs(r.p95 - e.p95) > 0.01 * e.p95
                    OR abs(r.p99 - e.p99) > 0.01 * e.p99
                    OR (r.p50 IS NULL) <> (e.p50 IS NULL))
             SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM rolled),
                    (SELECT count(*) FROM (SELECT site, bucket, checks, up, degraded, down, skipped
                                           FROM exact EXCEPT
                                           SELECT site, bucket, checks, up, degraded, down, skipped
                                           FROM rolled) d),
                    (SELECT count(*) FROM (SELECT site, bucket, checks, up, degraded, down, skipped
                                           FROM rolled EXCEPT
                                           SELECT site, bucket, checks, up, degraded, down, skipped
                                           FROM exact) d),
                    (SELECT sum(skipped)::int8 FROM rolled),
                    (SELECT n FROM far)"
        );
        let r = client.query_one(&sql, &[]).await.unwrap();
        let (raw, rolled, missing, extra, skipped, far): (i64, i64, i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        assert_eq!(far, 0, "{table}: percentiles beyond the sketch's 1 % bound");
        eprintln!("{table}: {rolled} rows, {skipped} skipped slots");
        assert!(raw > 2, "{table}: {raw} windows");
        assert_eq!((rolled, missing, extra), (raw, 0, 0), "{table} vs raw rows");
        assert_eq!(
            skipped,
            2 * 45,
            "{table}: only the backfilled slots stay skipped"
        );
    }
}

/// Retention drops exactly the expired partitions: raw rows and minute
/// rollups older than `retention.raw`, hour rollups of months older than
/// `retention.rollups`; everything newer stays.
#[tokio::test]
async fn retention_drops_exactly_the_expired_partitions() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    let today = chrono::NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
    client
        .query_one(
            "SELECT sitewatch_ensure_partitions($1, $2)",
            &[&(today - chrono::Days::new(90)), &today],
        )
        .await
        .unwrap();
    // One check at noon of each of the last 90 days.
    let rows: Vec<sitewatch::model::CheckOutcome> = (0..90u64)
        .map(|d| {
            let day = (today - chrono::Days::new(d))
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc();
            crate::support::slot_outcomes("old", day, "http://old.test/").1
        })
        .collect();
    store::insert_results(&client, &rows).await.unwrap();

    let retention: sitewatch::config::RetentionSettings =
        toml::from_str("raw = \"30days\"\nrollups = \"60days\"").unwrap();
    let dropped = store::apply_retention(&client, &retention, today)
        .await
        .unwrap();
    let days_of =
        |table: &'static str| {
            let client = &client;
            async move {
                client
                    .query_one(
                        &format!(
                        "SELECT min((date_trunc('day', {c} AT TIME ZONE 'UTC'))::date), count(*)
                         FROM {table}",
                        c = if table == "check_results" { "scheduled_at" } else { "bucket" }
                    ),
                        &[],
                    )
                    .await
                    .map(|r| (r.get::<_, chrono::NaiveDate>(0), r.get::<_, i64>(1)))
                    .unwrap()
            }
        };
    let keep_raw = today - chrono::Days::new(30);
    assert_eq!(days_of("check_results").await, (keep_raw, 31));
    assert_eq!(days_of("rollup_minute").await, (keep_raw, 31));
    // Hour rollups go by whole months: the cut-off is 2026-01-14, so
    // December 2025 (ending 2026-01-01) goes and January 2026 stays.
    let jan1 = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    assert_eq!(days_of("rollup_hour").await, (jan1, 31 + 28 + 15));
    // Dropping again drops nothing.
    assert!(store::apply_retention(&client, &retention, today)
        .await
        .unwrap()
        .is_empty());
    assert!(
        dropped.iter().any(|p| p == "check_results_20260212"),
        "{dropped:?}"
    );
    assert!(
        !dropped.iter().any(|p| p == "check_results_20260213"),
        "{dropped:?}"
    );
    assert!(
        dropped.iter().any(|p| p == "rollup_minute_20260212"),
        "{dropped:?}"
    );
    assert!(
        dropped.iter().any(|p| p == "rollup_hour_202512"),
        "{dropped:?}"
    );
    assert!(
        !dropped.iter().any(|p| p == "rollup_hour_202601"),
        "{dropped:?}"
    );
}

/// The rollups' response-time sketch (migration V10): every quantile within
/// 1 % of the exact order statistic, over five decades of values; merging
/// equals sketching the union; its size is bounded by its buckets, not by
/// how many values it holds.
#[tokio::test]
async fn the_latency_sketch_keeps_its_error_bound_and_its_size() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    let r = client
        .query_one(
            "WITH v AS (SELECT (0.5 * power(10, 5 * random()))::float8 AS ms
                        FROM generate_series(1, 20000)),
                  a AS (SELECT array_agg(ms ORDER BY ms) AS rt FROM v),
                  q AS (SELECT q FROM unnest(ARRAY[0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9,
                                                   0.95, 0.99, 0.999, 1]::float8[]) q),
                  s AS (SELECT sitewatch_sketch_of(rt) AS sk, rt FROM a)
             SELECT max(abs(sitewatch_sketch_quantile(sk, q)
                            - rt[floor(q * (cardinality(rt) - 1))::int + 1])
                        / rt[floor(q * (cardinality(rt) - 1))::int + 1]),
                    min(sitewatch_sketch_count(sk)),
                    min(cardinality(sk)),
                    bool_and(sitewatch_sketch_merge(sitewatch_sketch_of(rt[1:7000]),
                                                    sitewatch_sketch_of(rt[7001:]))
                             = sk)
             FROM s, q",
            &[],
        )
        .await
        .unwrap();
    let (worst, count, buckets, merges): (f64, i64, i32, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert!(worst <= 0.01, "worst relative error {worst}");
    assert_eq!(count, 20_000);
    // Five decades at 2 % per bucket: ln(1e5) / ln(1.02) = 582 buckets.
    assert!(buckets <= 583, "{buckets} buckets");
    assert!(merges, "merge(a, b) = sketch(a ∪ b)");
    // The aggregate over rows equals the sketch of all values, and a sketch
    // of many copies of few values stays as small as the few.
    let r = client
        .query_one(
            "SELECT sitewatch_sketch_agg(s) = sitewatch_sketch_of(ARRAY[1, 2, 2, 300]::float8[]),
                    cardinality(sitewatch_sketch_of(array_fill(42.0::float8, ARRAY[100000])))
             FROM (VALUES (sitewatch_sketch_of(ARRAY[1, 2]::float8[])),
                          (sitewatch_sketch_of(ARRAY[2, 300]::float8[]))) AS v(s)",
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, bool>(0));
    assert_eq!(r.get::<_, i32>(1), 1);
}
