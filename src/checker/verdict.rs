//! After the exchange: decoding the body, judging every assertion and
//! keeping the evidence. This is CPU work on what a server chose to send,
//! so it runs on the blocking pool, never on an async worker (which would
//! stall every other check, the API and `/healthz`), within the check's
//! deadline, and its time is recorded apart (`judge_ms`): `finished_at`
//! and `response_time_ms` keep meaning the exchange.
//!
//! Each piece is bounded on its own: the body by the read cap, decoding by
//! the same cap, a JSONPath query by its cost bound (`json_budget`), a regex
//! by its compiled size and linear-time matching. The deadline bounds what
//! the check waits for; the work left behind is bounded by those.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::evidence;
use super::judge::{self, Response, Rules};
use crate::model::{CheckOutcome, ErrorKind, LazySecrets, Outcome};

/// Bodies up to this size, plain and judged without any pattern, are
/// judged in place: handing them to another thread would cost more.
const INLINE_BYTES: usize = 16 * 1024;
/// Judging may run this long past the exchange even when the exchange used
/// up the timeout: a slow answer is judged, not failed for its judging.
const MIN_JUDGE_TIME: Duration = Duration::from_millis(500);

/// What judging needs besides the response.
pub struct Judging {
    pub rules: Arc<Rules>,
    /// Body bytes kept at most after decoding.
    pub cap: usize,
    /// Body bytes kept as evidence.
    pub keep: usize,
}

/// `out` (with the exchange's fields set) judged against `r`, whose body
/// is as it came on the wire (decoded here by its `Content-Encoding`).
/// A `down` outcome keeps its evidence, with `secrets` hidden (built only
/// then: most checks pass and need no filter).
pub async fn judged(
    out: CheckOutcome,
    r: Response,
    j: &Judging,
    deadline: Instant,
    secrets: Arc<LazySecrets>,
) -> CheckOutcome {
    let started = Instant::now();
    let coding = r.headers.get(http::header::CONTENT_ENCODING).cloned();
    let cheap = coding.is_none() && r.body.len() <= INLINE_BYTES && j.rules.without_patterns();
    let (rules, cap, shared) = (j.rules.clone(), j.cap, secrets.clone());
    let work = move |out| judge_now(out, r, coding.as_ref(), &rules, cap, &shared);
    let (mut out, judged) = if cheap {
        work(out)
    } else {
        let unjudged = out.clone();
        let until = deadline.max(started + MIN_JUDGE_TIME);
        let task = tokio::task::spawn_blocking(move || work(out));
        match tokio::time::timeout_at(until.into(), task).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => (
                failed(
                    unjudged,
                    ErrorKind::Other,
                    format!("judging the response failed: {e}"),
                ),
                None,
            ),
            Err(_) => (
                failed(
                    unjudged,
                    ErrorKind::Timeout,
                    format!(
                        "the response came, but judging it did not finish within the timeout \
                         (it had run {} ms)",
                        started.elapsed().as_millis()
                    ),
                ),
                None,
            ),
        }
    };
    if let (Outcome::Down, Some(r)) = (out.outcome, &judged) {
        // A few KiB of the body: cheap enough for an async worker.
        let version = out.http_version.as_deref().unwrap_or("HTTP/1.1");
        out.evidence = Some(evidence::of(version, r, j.keep, secrets.get()));
    }
    if let Some(t) = &mut out.timing {
        t.judge_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    }
    out
}

/// The judged outcome, and the decoded response it was judged on (`None`
/// when it could not be decoded).
fn judge_now(
    mut out: CheckOutcome,
    mut r: Response,
    coding: Option<&HeaderValue>,
    rules: &Rules,
    cap: usize,
    secrets: &LazySecrets,
) -> (CheckOutcome, Option<Response>) {
    if let Some(coding) = coding {
        match super::codings::decode(coding.as_bytes(), &r.body, cap) {
            Ok((decoded, more)) => {
                r.body = decoded;
                r.truncated |= more;
            }
            Err(f) => return (failed(out, f.kind, f.message), None),
        }
    }
    judge::judge(&mut out, &r, rules, secrets);
    evidence::hide_credential_headers(&mut out);
    (out, Some(r))
}

fn failed(mut out: CheckOutcome, kind: ErrorKind, message: String) -> CheckOutcome {
    out.outcome = Outcome::Down;
    out.error_kind = Some(kind);
    out.error_message = Some(message);
    out
}
