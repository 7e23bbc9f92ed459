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
            "V9__requested_by"
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
        let sql = format!(
            "WITH raw AS (
                 SELECT site, date_trunc('{unit}', scheduled_at) AS bucket,
                        count(*) FILTER (WHERE outcome <> 'skipped') AS checks,
                        count(*) FILTER (WHERE outcome = 'up') AS up,
                        count(*) FILTER (WHERE outcome = 'degraded') AS degraded,
                        count(*) FILTER (WHERE outcome = 'down') AS down,
                        count(*) FILTER (WHERE outcome = 'skipped') AS skipped,
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms) AS p50,
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms) AS p95,
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY response_time_ms) AS p99
                 FROM check_results GROUP BY 1, 2),
             rolled AS (
                 SELECT site, bucket, checks::int8, up::int8, degraded::int8, down::int8,
                        skipped::int8, p.p50, p.p95, p.p99
                 FROM {table}, sitewatch_percentiles(rt_ms) p)
             SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM rolled),
                    (SELECT count(*) FROM (SELECT * FROM raw EXCEPT SELECT * FROM rolled) d),
                    (SELECT count(*) FROM (SELECT * FROM rolled EXCEPT SELECT * FROM raw) d),
                    (SELECT sum(skipped)::int8 FROM rolled)"
        );
        let r = client.query_one(&sql, &[]).await.unwrap();
        let (raw, rolled, missing, extra, skipped): (i64, i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
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
