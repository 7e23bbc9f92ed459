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
            "V18__hour_rollups_at_close",
            "V19__progress_never_ahead",
            "V20__judge_time",
            "V21__flapping",
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
             DROP VIEW site_uptime_long, site_uptime_daily, rollup_hour;
             DROP TABLE rollup_hour_watermark, rollup_hour_progress, rollup_hour_dirty;
             DROP INDEX rollup_minute_bucket;
             DROP FUNCTION sitewatch_close_hours, sitewatch_sum_hour, sitewatch_resum_hours;
             ALTER TABLE rollup_hour_closed RENAME TO rollup_hour;
             ALTER TABLE check_results DROP COLUMN judge_ms;
             ALTER TABLE site_state DROP COLUMN changes;
             DROP INDEX alert_outbox_incident;
             ALTER TABLE incidents DROP COLUMN flapping_since, DROP COLUMN flapped;
             ALTER TABLE alert_outbox DROP CONSTRAINT alert_outbox_event_check;
             ALTER TABLE alert_outbox ADD CONSTRAINT alert_outbox_event_check
                 CHECK (event IN ('opened', 'resolved', 'reminder'));
             DELETE FROM refinery_schema_history WHERE version >= 17;
             INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome)
             VALUES (gen_random_uuid(), 's', 'https://s/', 'scheduled', now(), 'up');",
        )
        .await
        .unwrap();
    let before = chrono::Utc::now();
    let report = store::migrate(&mut client).await.unwrap();
    assert_eq!(
        report.applied,
        [
            "V17__time_leading_check_ids",
            "V18__hour_rollups_at_close",
            "V19__progress_never_ahead",
            "V20__judge_time",
            "V21__flapping"
        ]
    );
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
    // Those days' hours closed long ago: their rows are summed again.
    let summed = store::roll_up_hours(&client, store::HOUR_GRACE)
        .await
        .unwrap();
    assert_eq!(summed.resummed, 90);

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
