//! Keeps the `sites` table in step with the configuration: new sites are
//! added, changed ones updated, and sites gone from the config are marked
//! (`in_config = false`, `enabled = false`) but never deleted, so their
//! history stays queryable. One statement per direction, whatever the count.

use tokio_postgres::Client;

use super::StoreError;
use crate::config::Site;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

pub async fn sync_sites<S: std::borrow::Borrow<Site>>(
    client: &mut Client,
    sites: &[S],
) -> Result<SyncReport, StoreError> {
    let mut names = Vec::with_capacity(sites.len());
    let mut urls = Vec::with_capacity(sites.len());
    let mut methods = Vec::with_capacity(sites.len());
    let mut intervals = Vec::with_capacity(sites.len());
    let mut timeouts = Vec::with_capacity(sites.len());
    let mut regexes = Vec::with_capacity(sites.len());
    let mut statuses = Vec::with_capacity(sites.len());
    let mut headers = Vec::with_capacity(sites.len());
    let mut enabled = Vec::with_capacity(sites.len());
    let mut sources = Vec::with_capacity(sites.len());
    for s in sites.iter().map(|s| s.borrow()) {
        names.push(s.name.clone());
        // Shown to every reader of the table and in alerts: no credentials.
        urls.push(crate::model::redacted_url(s.url.as_str()));
        methods.push(s.method.to_string());
        intervals.push(s.interval.as_millis() as i64);
        timeouts.push(s.timeout.as_millis() as i64);
        regexes.push(s.regex.as_ref().map(|r| r.as_str().to_owned()));
        statuses.push(s.expect_status.to_string());
        let mut h: Vec<&str> = s.headers.keys().map(|k| k.as_str()).collect();
        h.dedup();
        // One text per site (arrays of arrays must be rectangular in Postgres).
        headers.push(h.join(","));
        enabled.push(s.enabled);
        sources.push(s.source.display().to_string());
    }

    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "INSERT INTO sites AS s (name, url, method, interval_ms, timeout_ms, regex,
                                     expect_status, header_names, enabled, source_file)
             SELECT n, u, m, i, t, r, e,
                    CASE WHEN h = '' THEN '{}'::text[] ELSE string_to_array(h, ',') END,
                    en, src
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::text[], $7::text[], $8::text[], $9::bool[], $10::text[])
                  AS x(n, u, m, i, t, r, e, h, en, src)
             ON CONFLICT (name) DO UPDATE SET
                 url = excluded.url, method = excluded.method,
                 interval_ms = excluded.interval_ms, timeout_ms = excluded.timeout_ms,
                 regex = excluded.regex, expect_status = excluded.expect_status,
                 header_names = excluded.header_names, enabled = excluded.enabled,
                 source_file = excluded.source_file,
                 in_config = true, removed_at = NULL, updated_at = now()
             WHERE (s.url, s.method, s.interval_ms, s.timeout_ms, s.regex, s.expect_status,
                    s.header_names, s.enabled, s.source_file, s.in_config)
                   IS DISTINCT FROM
                   (excluded.url, excluded.method, excluded.interval_ms, excluded.timeout_ms,
                    excluded.regex, excluded.expect_status, excluded.header_names,
                    excluded.enabled, excluded.source_file, true)
             RETURNING (xmax = 0) AS inserted",
            &[
                &names, &urls, &methods, &intervals, &timeouts, &regexes, &statuses, &headers,
                &enabled, &sources,
            ],
        )
        .await?;
    let added = rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
    let changed = rows.len() as u64 - added;
    let removed = tx
        .execute(
            "UPDATE sites SET in_config = false, enabled = false,
                              removed_at = now(), updated_at = now()
             WHERE in_config AND NOT (name = ANY($1))",
            &[&names],
        )
        .await?;
    // A site disabled or removed forgets its incident state (its open
    // incident is closed by the evaluator): back, it starts afresh, not one
    // failure away from an incident begun before it left.
    tx.execute(
        "DELETE FROM site_state s USING sites t WHERE t.name = s.site AND NOT t.enabled",
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(SyncReport {
        added,
        changed,
        removed,
    })
}
