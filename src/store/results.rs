//! Writing check results: a whole batch in one statement, idempotent by
//! `check_id`. A redelivered outcome never makes a second row; a real result
//! replaces a `skipped` placeholder for the same slot (the scheduler records
//! unconfirmed slots as skipped after a crash, and the real result may still
//! arrive), never the other way round.

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::StoreError;
use crate::model::{redacted_url, CheckKind, CheckOutcome, Outcome};

const INSERT_RAW: &str = "
INSERT INTO check_results AS c
    (check_id, site, url, origin, scheduled_at, started_at, finished_at, outcome,
     status_code, response_time_ms, regex_matched, body_bytes, error_kind,
     error_message, checker, dns_ms, connect_ms, tls_ms, ttfb_ms, transfer_ms,
     redirects, remote_addr, http_version, cert_not_after, cert_days_left,
     cert_subject, cert_issuer, tls_version, failures, requested_by, late, evidence, kind,
     answers, judge_ms)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::timestamptz[], $7::timestamptz[], $8::text[], $9::int2[],
                     $10::float8[], $11::bool[], $12::int8[], $13::text[], $14::text[],
                     $15::text[], $16::float8[], $17::float8[], $18::float8[], $19::float8[],
                     $20::float8[], $21::int2[], $22::text[], $23::text[], $24::timestamptz[],
                     $25::float8[], $26::text[], $27::text[], $28::text[], $29::jsonb[],
                     $30::text[], $31::bool[], $32::jsonb[], $33::text[], $34::jsonb[], $35::float8[])
ON CONFLICT (check_id, scheduled_at) DO UPDATE SET
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    outcome = excluded.outcome, status_code = excluded.status_code,
    response_time_ms = excluded.response_time_ms, regex_matched = excluded.regex_matched,
    body_bytes = excluded.body_bytes, error_kind = excluded.error_kind,
    error_message = excluded.error_message, checker = excluded.checker,
    dns_ms = excluded.dns_ms, connect_ms = excluded.connect_ms, tls_ms = excluded.tls_ms,
    ttfb_ms = excluded.ttfb_ms, transfer_ms = excluded.transfer_ms,
    redirects = excluded.redirects, remote_addr = excluded.remote_addr,
    http_version = excluded.http_version, cert_not_after = excluded.cert_not_after,
    cert_days_left = excluded.cert_days_left, cert_subject = excluded.cert_subject,
    cert_issuer = excluded.cert_issuer, tls_version = excluded.tls_version,
    failures = excluded.failures, late = excluded.late, evidence = excluded.evidence,
    answers = excluded.answers, judge_ms = excluded.judge_ms,
    persisted_at = now(),
    replaced_placeholder = true
WHERE c.outcome = 'skipped' AND excluded.outcome <> 'skipped'
RETURNING c.site, c.scheduled_at, c.outcome, c.response_time_ms,
          NOT c.replaced_placeholder AS fresh, c.origin";

/// The rollups, from the scheduled rows a statement wrote (`ins`: site,
/// scheduled_at, outcome, response_time_ms, fresh, origin; on-demand checks
/// are not the site's history), in the same statement and so the same
/// transaction: a rollup never counts a row that was not written, nor misses
/// one that was. A row that is not fresh replaced a `skipped` placeholder
/// (the only update the raw insert makes), so it moves one count from
/// `skipped` to its outcome. Response times go into a fixed-size sketch
/// (migration V10), so updating a rollup row costs the same whatever it
/// already holds. Rows without response times (`skipped` placeholders:
/// missed and shed slots) leave the sketch as it is (`sketch` false): the
/// sketch functions would only merge an empty sketch, at about half the
/// cost of such a row's whole write.
fn rollup(name: &str, table: &str, unit: &str, sketch: bool) -> String {
    let (of, merge) = if sketch {
        (
            "sitewatch_sketch_of(array_agg(response_time_ms))",
            "sitewatch_sketch_merge(r.rt_sketch, excluded.rt_sketch)",
        )
    } else {
        ("'{}'::int8[]", "r.rt_sketch")
    };
    format!(
        "{name} AS (
    INSERT INTO {table} AS r (site, bucket, checks, up, degraded, down, skipped, rt_sketch)
    SELECT site, date_trunc('{unit}', scheduled_at),
           count(*) FILTER (WHERE outcome <> 'skipped'),
           count(*) FILTER (WHERE outcome = 'up'),
           count(*) FILTER (WHERE outcome = 'degraded'),
           count(*) FILTER (WHERE outcome = 'down'),
           count(*) FILTER (WHERE outcome = 'skipped' AND fresh) - count(*) FILTER (WHERE NOT fresh),
           {of}
    FROM ins WHERE origin = 'scheduled' GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (site, bucket) DO UPDATE SET
        checks = r.checks + excluded.checks, up = r.up + excluded.up,
        degraded = r.degraded + excluded.degraded, down = r.down + excluded.down,
        skipped = r.skipped + excluded.skipped,
        rt_sketch = {merge}
)"
    )
}

/// The CTEs (`wm`, then `{name}`) that mark the site-hours of the rows of
/// `{from}` (columns `site` and `{at}`, scheduled rows where `{scheduled}`)
/// in `rollup_hour_dirty` when their hour is already closed, so that it is
/// summed again from its minute rows (migration V18). Hour rows are
/// otherwise summed once when the hour closes: a check writes its raw row
/// and its minute row only. `closed_until` is read with FOR SHARE: closing
/// an hour waits for this statement's transaction, or this statement sees
/// the hour closed (READ COMMITTED re-reads a row updated by a committed
/// transaction); either way the hour's sum misses no minute row.
pub(super) fn mark_closed_hours(name: &str, from: &str, at: &str, scheduled: &str) -> String {
    format!(
        "wm AS (SELECT closed_until FROM rollup_hour_watermark FOR SHARE),
{name} AS (
    INSERT INTO rollup_hour_dirty AS d (site, bucket)
    SELECT DISTINCT site, date_trunc('hour', {at}, 'UTC')
    FROM {from}, wm WHERE {scheduled} AND {at} < wm.closed_until ORDER BY 1, 2
    ON CONFLICT (site, bucket) DO UPDATE SET marked_at = now())"
    )
}

/// The raw insert and its rollups, as one statement.
fn with_rollups(insert: &str, sketch: bool) -> String {
    format!(
        "WITH ins AS ({insert}),\n{},\n{}\nSELECT count(*) FROM ins",
        rollup("minute", "rollup_minute", "minute", sketch),
        mark_closed_hours("hour", "ins", "scheduled_at", "origin = 'scheduled'")
    )
}

static INSERT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| with_rollups(INSERT_RAW, true));
static INSERT_SKIPPED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    with_rollups(
        "INSERT INTO check_results (check_id, site, url, origin, scheduled_at, outcome,
                                    error_kind, error_message, kind)
         SELECT id, s, u, 'scheduled', t, 'skipped', k, m, ck
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                     $6::text[], $7::text[]) AS x(id, s, u, t, k, m, ck)
         ON CONFLICT (check_id, scheduled_at) DO NOTHING
         RETURNING site, scheduled_at, outcome, response_time_ms, true AS fresh, origin",
        false,
    )
});

/// One outcome per check: Postgres refuses an `ON CONFLICT DO UPDATE` that
/// touches a row twice, and a batch can hold the same check twice (a
/// redelivery, or a slot published by two schedulers while a shard moved).
/// A real outcome wins over a `skipped` one; otherwise the first is kept.
fn one_per_check(rows: &[CheckOutcome]) -> Vec<&CheckOutcome> {
    let mut at: std::collections::HashMap<(Uuid, DateTime<Utc>), usize> =
        std::collections::HashMap::with_capacity(rows.len());
    let mut out: Vec<&CheckOutcome> = Vec::with_capacity(rows.len());
    for r in rows {
        match at.entry((r.check_id, r.scheduled_at)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(out.len());
                out.push(r);
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                let kept = &mut out[*o.get()];
                if kept.outcome == Outcome::Skipped && r.outcome != Outcome::Skipped {
                    *kept = r;
                }
            }
        }
    }
    out
}

/// Inserts `rows` in one statement; returns how many rows were written
/// (new, or a skipped placeholder replaced).
pub async fn insert_results(
    client: &impl GenericClient,
    rows: &[CheckOutcome],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let rows = one_per_check(rows);
    let mut ids: Vec<Uuid> = Vec::with_capacity(rows.len());
    let mut sites = Vec::with_capacity(rows.len());
    let mut urls = Vec::with_capacity(rows.len());
    let mut origins = Vec::with_capacity(rows.len());
    let mut scheduled: Vec<DateTime<Utc>> = Vec::with_capacity(rows.len());
    let mut started = Vec::with_capacity(rows.len());
    let mut finished = Vec::with_capacity(rows.len());
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut codes: Vec<Option<i16>> = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut matched = Vec::with_capacity(rows.len());
    let mut bytes: Vec<Option<i64>> = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    let mut checkers = Vec::with_capacity(rows.len());
    let mut phases: [Vec<Option<f64>>; 6] = Default::default();
    let mut redirects: Vec<Option<i16>> = Vec::with_capacity(rows.len());
    let mut remotes = Vec::with_capacity(rows.len());
    let mut versions = Vec::with_capacity(rows.len());
    let mut not_after: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(rows.len());
    let mut days_left: Vec<Option<f64>> = Vec::with_capacity(rows.len());
    let mut subjects = Vec::with_capacity(rows.len());
    let mut issuers = Vec::with_capacity(rows.len());
    let mut tls_versions = Vec::with_capacity(rows.len());
    let mut failures: Vec<Option<serde_json::Value>> = Vec::with_capacity(rows.len());
    let mut requesters = Vec::with_capacity(rows.len());
    let mut late = Vec::with_capacity(rows.len());
    let mut evidence: Vec<Option<serde_json::Value>> = Vec::with_capacity(rows.len());
    let mut check_kinds = Vec::with_capacity(rows.len());
    let mut answers: Vec<Option<serde_json::Value>> = Vec::with_capacity(rows.len());
    for r in rows.iter().copied() {
        answers.push((!r.answers.is_empty()).then(|| serde_json::json!(r.answers)));
        check_kinds.push(kind_of(&r.url));
        evidence.push(
            r.evidence
                .as_ref()
                .map(|e| serde_json::to_value(e).expect("evidence serialises")),
        );
        late.push(r.late);
        requesters.push(r.requested_by.as_deref());
        ids.push(r.check_id);
        sites.push(r.site.as_str());
        urls.push(r.url.as_str());
        origins.push(r.origin.as_str());
        scheduled.push(r.scheduled_at);
        started.push(r.started_at);
        finished.push(r.finished_at);
        outcomes.push(r.outcome.as_str());
        codes.push(r.status_code.map(|c| c as i16));
        times.push(r.response_time_ms);
        matched.push(r.regex_matched);
        bytes.push(r.body_bytes.map(|b| b.min(i64::MAX as u64) as i64));
        kinds.push(r.error_kind.map(|k| k.as_str()));
        messages.push(r.error_message.as_deref());
        checkers.push(r.checker.as_deref());
        let t = r.timing.as_ref();
        for (column, value) in phases.iter_mut().zip([
            t.and_then(|t| t.dns_ms),
            t.and_then(|t| t.connect_ms),
            t.and_then(|t| t.tls_ms),
            t.and_then(|t| t.ttfb_ms),
            t.and_then(|t| t.transfer_ms),
            t.and_then(|t| t.judge_ms),
        ]) {
            column.push(value);
        }
        redirects.push(t.map(|t| t.redirects.min(i16::MAX as u32) as i16));
        remotes.push(r.remote_addr.as_deref());
        versions.push(r.http_version.as_deref());
        let c = r.tls.as_ref();
        not_after.push(c.map(|c| c.not_after));
        days_left.push(c.map(|c| c.days_left));
        subjects.push(c.map(|c| c.subject.as_str()));
        issuers.push(c.map(|c| c.issuer.as_str()));
        tls_versions.push(c.and_then(|c| c.version.as_deref()));
        failures.push(
            (!r.failures.is_empty())
                .then(|| serde_json::to_value(&r.failures).expect("failures serialise")),
        );
    }
    let n: i64 = client
        .query_one(
            INSERT.as_str(),
            &[
                &ids,
                &sites,
                &urls,
                &origins,
                &scheduled,
                &started,
                &finished,
                &outcomes,
                &codes,
                &times,
                &matched,
                &bytes,
                &kinds,
                &messages,
                &checkers,
                &phases[0],
                &phases[1],
                &phases[2],
                &phases[3],
                &phases[4],
                &redirects,
                &remotes,
                &versions,
                &not_after,
                &days_left,
                &subjects,
                &issuers,
                &tls_versions,
                &failures,
                &requesters,
                &late,
                &evidence,
                &check_kinds,
                &answers,
                &phases[5],
            ],
        )
        .await?
        .get(0);
    Ok(n as u64)
}

/// Records each slot in `slots` of `site` as skipped with `kind`/`message`,
/// unless the slot already has a row. One statement for all of them.
pub async fn insert_skipped(
    client: &impl GenericClient,
    rows: &[SkippedSlot],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.check_id).collect();
    let sites: Vec<&str> = rows.iter().map(|r| r.site.as_str()).collect();
    // The site's URL as configured may carry credentials (`user:pw@`,
    // `?token=`); a row shows what may be shown.
    let urls: Vec<String> = rows.iter().map(|r| redacted_url(&r.url)).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.scheduled_at).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let messages: Vec<&str> = rows.iter().map(|r| r.message.as_str()).collect();
    let check_kinds: Vec<&str> = rows.iter().map(|r| kind_of(&r.url)).collect();
    let n: i64 = client
        .query_one(
            INSERT_SKIPPED.as_str(),
            &[&ids, &sites, &urls, &at, &kinds, &messages, &check_kinds],
        )
        .await?
        .get(0);
    Ok(n as u64)
}

/// The `kind` column of a row for `url` (migration V13).
fn kind_of(url: &str) -> &'static str {
    CheckKind::of_url(url).unwrap_or(CheckKind::Http).as_str()
}

/// A slot that was not checked.
#[derive(Debug, Clone)]
pub struct SkippedSlot {
    pub check_id: Uuid,
    pub site: String,
    pub url: String,
    pub scheduled_at: DateTime<Utc>,
    /// `missed_slot`, ...
    pub kind: &'static str,
    pub message: String,
}

/// True when `e` is about the rows (a value Postgres refuses), not about
/// Postgres being unreachable: retrying the same rows will not help.
pub fn is_data_error(e: &StoreError) -> bool {
    let StoreError::Postgres(pg) = e else {
        return false;
    };
    match pg.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("22") || c.starts_with("23")
        }
        None => false,
    }
}

/// True when the error is "no partition of relation found for row".
pub fn is_missing_partition(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(pg)
        if pg.code() == Some(&SqlState::CHECK_VIOLATION)
            && pg.as_db_error().is_some_and(|d| d.message().contains("no partition")))
}

/// Creates the daily partitions for `[from, to]` (UTC days).
pub async fn ensure_partitions(
    client: &impl GenericClient,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<i32, StoreError> {
    let row = client
        .query_one("SELECT sitewatch_ensure_partitions($1, $2)", &[&from, &to])
        .await?;
    Ok(row.get(0))
}
