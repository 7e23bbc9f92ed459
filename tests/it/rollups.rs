//! Rollups against a real Postgres: minute rows written with the raw rows,
//! hour rows summed when the hour closes (migration V18), the latency sketch
//! (migration V10).

use chrono::DurationRound as _;
use sitewatch::store;
use std::time::Duration;

use crate::support::{count, wait_for, TestDb};

/// Minute rows are written by the statements that write the raw rows,
/// hour rows summed once when their hour closes and again for the site-hours
/// written later; both equal what the raw rows give for the same window:
/// counts per outcome and response-time percentiles, with placeholders
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
    // The first results while their hours are open (the hour before `base`
    // closed when the schema was made: its rows are marked). Then every hour
    // closes and is summed once from its minute rows; what comes after
    // (placeholders replaced, redeliveries, backfill) is late and marks its
    // site-hours, which are summed again.
    store::insert_results(&client, &batches[0]).await.unwrap();
    store::insert_results(&client, &batches[1]).await.unwrap();
    client
        .query_one("SELECT sitewatch_close_hours('-3 hours')", &[])
        .await
        .unwrap();
    let first = store::roll_up_hours(&client, store::HOUR_GRACE)
        .await
        .unwrap();
    let hour = chrono::Duration::hours(1);
    assert_eq!(
        first.summed,
        [base, base + hour, base + hour * 2],
        "the hours after the schema's, summed once each"
    );
    assert_eq!(first.resummed, 2, "the hour before: one mark per site");
    for batch in &batches[2..] {
        store::insert_results(&client, batch).await.unwrap();
    }
    store::insert_skipped(&client, &backfill).await.unwrap();
    store::insert_skipped(&client, &backfill).await.unwrap(); // again: nothing new
    let marked = crate::support::count(&client, "SELECT count(*) FROM rollup_hour_dirty").await;
    assert_eq!(marked, 2 * 3, "each site's three hours marked once");
    let late = store::roll_up_hours(&client, store::HOUR_GRACE)
        .await
        .unwrap();
    assert_eq!((late.summed.len(), late.resummed), (0, 6));
    assert_eq!(
        crate::support::count(
            &client,
            "SELECT count(*) FROM rollup_hour_closed WHERE bucket < (SELECT summed_until FROM rollup_hour_progress)"
        )
        .await,
        2 * 3,
        "the view reads every hour from the summed rows"
    );

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

/// Closing an hour waits for a writer that saw it open, so the hour's sum
/// holds that writer's rows; a writer that comes after the close marks its
/// site-hour, which is summed again (migration V18). Without the locking
/// read of `closed_until` the close would not wait and a row could be in no
/// hour row.
#[tokio::test]
async fn closing_an_hour_waits_for_its_writers_and_later_writers_mark_it() {
    let db = TestDb::create().await;
    let mut writer = db.client().await;
    store::migrate(&mut writer).await.unwrap();
    let closer = db.client().await;
    let watcher = db.client().await;
    let hour = chrono::Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap();
    let at = |secs| hour + chrono::Duration::seconds(secs);
    let (_, a) = crate::support::slot_outcomes("a", at(1), "http://a.test/");
    let tx = writer.transaction().await.unwrap();
    store::insert_results(&tx, &[a]).await.unwrap();
    let close = tokio::spawn(async move {
        closer
            .query_one("SELECT sitewatch_close_hours('-1 hours')", &[])
            .await
            .map(|_| closer)
    });
    wait_for(
        "the close to wait for the writer",
        Duration::from_secs(30),
        || async {
            count(
                &watcher,
                "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%sitewatch_close_hours%'",
            )
            .await
                == 1
        },
    )
    .await;
    assert!(
        !close.is_finished(),
        "the close waits while the writer is open"
    );
    tx.commit().await.unwrap();
    let closer = close.await.unwrap().unwrap();

    let (_, b) = crate::support::slot_outcomes("b", at(2), "http://b.test/");
    store::insert_results(&writer, &[b]).await.unwrap();
    let marks = "SELECT count(*) FROM rollup_hour_dirty";
    assert_eq!(
        count(&watcher, marks).await,
        1,
        "the late writer marks its hour"
    );

    let r = store::roll_up_hours(&closer, store::HOUR_GRACE)
        .await
        .unwrap();
    assert_eq!((r.summed, r.resummed), (vec![hour], 1));
    assert_eq!(count(&watcher, marks).await, 0);
    let checks = count(
        &watcher,
        &format!(
            "SELECT sum(checks)::int8 FROM rollup_hour_closed WHERE bucket = '{}'",
            hour.to_rfc3339()
        ),
    )
    .await;
    assert_eq!(checks, 2, "both writers' checks in the summed hour");
    let view = count(&watcher, "SELECT sum(checks)::int8 FROM rollup_hour").await;
    assert_eq!(
        view, 2,
        "the view reads the summed hour, not the minutes too"
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
