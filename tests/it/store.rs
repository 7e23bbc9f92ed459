//! Migrations, partitions and the `sites` sync against a real Postgres.

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
            "V4__rich_checks"
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
    assert_eq!(total, 4, "each of the four migrations applied exactly once");
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
