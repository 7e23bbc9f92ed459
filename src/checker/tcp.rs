//! A `tcp://host:port` check: resolve, connect, optionally write `send`,
//! and optionally read until what came matches `expect` (a banner, a PONG).
//! The outcome carries the DNS and connect times, the time to the expected
//! answer and how many bytes came. Like an HTTP check, a site being down is
//! data, never an `Err`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::{Connector, Fail, Phase, Route, Trace};
use super::pattern::Pattern;
use crate::model::{
    CheckOptions, CheckOutcome, CheckRequest, ErrorKind, Failure, LazySecrets, Outcome,
};

/// Compiles an `expect` pattern (the HTTP checker's regex cache).
pub type Compile<'a> = dyn Fn(Option<&str>) -> Result<Option<Arc<Pattern>>, String> + Sync + 'a;

/// Runs the `tcp://` check `req`; `cap` bounds the bytes read for `expect`,
/// `compile` turns it into a regex.
pub async fn check(
    connector: &Connector,
    req: &CheckRequest,
    instance: &str,
    cap: usize,
    compile: &Compile<'_>,
    secrets: &LazySecrets,
) -> CheckOutcome {
    let mut out = CheckOutcome {
        started_at: Some(Utc::now()),
        ..CheckOutcome::of(req, Outcome::Down, instance)
    };
    let o = req.options.clone().unwrap_or_default();
    let (route, expect) = match prepare(req, &o, compile) {
        Ok(p) => p,
        Err(msg) => {
            out.error_kind = Some(ErrorKind::InvalidRequest);
            out.error_message = Some(msg);
            out.finished_at = Some(Utc::now());
            return out;
        }
    };
    let timeout = Duration::from_millis(req.timeout_ms);
    let clock = Instant::now();
    let deadline = clock + timeout;
    let mut trace = Trace::default();
    let send = o.send.as_deref().unwrap_or_default().as_bytes();
    // Outside the future, so a timeout can still say what came.
    let mut data = Vec::new();
    let dialogue = Dialogue {
        send,
        expect: expect.as_ref(),
        cap,
    };
    let exchange = run(
        connector, &route, &mut trace, deadline, &dialogue, &mut data,
    );
    let result = tokio::time::timeout_at(deadline.into(), exchange).await;
    let took = clock.elapsed().as_secs_f64() * 1e3;
    out.finished_at = Some(Utc::now());
    out.timing = Some(trace.timing);
    out.remote_addr = trace.remote.map(|a| a.to_string());
    let (kind, message) = match result {
        Err(_) if trace.phase == Phase::Dns => {
            let host = trace.resolving.as_deref().unwrap_or_default();
            (
                ErrorKind::Dns,
                connector.resolver().timed_out(host, timeout),
            )
        }
        Err(_) => (
            ErrorKind::Timeout,
            match (trace.phase, &expect) {
                (Phase::Ttfb, Some(re)) => format!(
                    "connected, but nothing came within {timeout:?} (expected something \
                     matching {:?})",
                    re.as_str()
                ),
                (Phase::Transfer, Some(re)) => {
                    out.body_bytes = Some(data.len() as u64);
                    out.regex_matched = Some(false);
                    format!(
                        "connected, but nothing matching {:?} came within {timeout:?}; got {} \
                         ({} bytes)",
                        re.as_str(),
                        excerpt(&data, secrets),
                        data.len()
                    )
                }
                (phase, _) => format!(
                    "no connection within {timeout:?} (timed out in {})",
                    phase.as_str()
                ),
            },
        ),
        Ok(Err(f)) => (f.kind, f.message),
        Ok(Ok(seen)) => {
            out.response_time_ms = Some(took);
            out.body_bytes = Some(data.len() as u64);
            judge(&mut out, &o, expect.as_deref(), &seen, &data, secrets);
            return out;
        }
    };
    out.error_kind = Some(kind);
    out.error_message = Some(message);
    out
}

/// The route and the compiled `expect`, or why the request is unusable.
fn prepare(
    req: &CheckRequest,
    o: &CheckOptions,
    expect: &Compile<'_>,
) -> Result<(Route, Option<Arc<Pattern>>), String> {
    let url = url::Url::parse(&req.url).map_err(|e| format!("bad url: {e}"))?;
    let (Some(host), Some(port)) = (url.host_str(), url.port()) else {
        return Err(format!("{url} is not a tcp://host:port URL"));
    };
    let expect = expect(o.expect.as_deref())?;
    let route = Route {
        https: false,
        host: host.to_owned(),
        port,
        verify_tls: false,
        ip_family: o.ip_family,
        public_only: req.public_only,
    };
    Ok((route, expect))
}

/// What to say and what to wait for once connected.
struct Dialogue<'a> {
    send: &'a [u8],
    expect: Option<&'a Arc<Pattern>>,
    /// Bytes read at most.
    cap: usize,
}

/// How the server's sending ended.
struct Seen {
    matched: bool,
    /// The connection ended (closed or reset) rather than the cap.
    closed: bool,
}

async fn run(
    connector: &Connector,
    route: &Route,
    trace: &mut Trace,
    deadline: Instant,
    dialogue: &Dialogue<'_>,
    data: &mut Vec<u8>,
) -> Result<Seen, Fail> {
    let Dialogue { send, expect, cap } = *dialogue;
    let (mut tcp, _) = connector.connect_tcp(route, trace, deadline).await?;
    let Some(re) = expect else {
        if !send.is_empty() {
            tcp.write_all(send)
                .await
                .map_err(|e| Fail::new(ErrorKind::Connect, format!("writing `send`: {e}")))?;
        }
        return Ok(Seen {
            matched: true,
            closed: false,
        });
    };
    trace.phase = Phase::Ttfb;
    let started = Instant::now();
    if !send.is_empty() {
        tcp.write_all(send)
            .await
            .map_err(|e| Fail::new(ErrorKind::Connect, format!("writing `send`: {e}")))?;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match tcp.read(&mut buf).await {
            Ok(n) => n,
            // A server that answers and resets (unread input of ours makes
            // a close a reset): judge what came.
            Err(_) if !data.is_empty() => 0,
            Err(e) => {
                return Err(Fail::new(
                    ErrorKind::Body,
                    format!("reading the answer: {e}"),
                ))
            }
        };
        if data.is_empty() {
            Trace::add(&mut trace.timing.ttfb_ms, started);
            trace.phase = Phase::Transfer;
        }
        let room = cap.saturating_sub(data.len());
        data.extend_from_slice(&buf[..n.min(room)]);
        let matched = matches(re, data)
            .await?
            .map_err(|costly| Fail::new(ErrorKind::RegexMismatch, format!("expect: {costly}")))?;
        if matched || n == 0 || data.len() >= cap {
            return Ok(Seen {
                matched,
                closed: n == 0,
            });
        }
    }
}

/// Above this, what came is matched on the blocking pool: a pattern on a
/// large input is CPU work no async worker may do.
const INLINE_MATCH_BYTES: usize = 16 * 1024;

/// Does `data` match `re` yet? (`data` goes to another thread and back.)
async fn matches(
    re: &Arc<Pattern>,
    data: &mut Vec<u8>,
) -> Result<Result<bool, super::pattern::TooCostly>, Fail> {
    if data.len() <= INLINE_MATCH_BYTES {
        return Ok(re.is_match(data));
    }
    let (re, taken) = (re.clone(), std::mem::take(data));
    let (back, matched) = tokio::task::spawn_blocking(move || {
        let matched = re.is_match(&taken);
        (taken, matched)
    })
    .await
    .map_err(|e| Fail::new(ErrorKind::Other, format!("matching `expect` failed: {e}")))?;
    *data = back;
    Ok(matched)
}

fn judge(
    out: &mut CheckOutcome,
    o: &CheckOptions,
    expect: Option<&Pattern>,
    seen: &Seen,
    data: &[u8],
    secrets: &LazySecrets,
) {
    if let (false, Some(re)) = (seen.matched, expect) {
        let ended = if seen.closed {
            "then the connection closed"
        } else {
            "then checker.max_body_bytes was reached"
        };
        let f = Failure {
            assertion: "expect".into(),
            expected: format!("matching {:?}", re.as_str()),
            observed: if data.is_empty() {
                "the connection closed with nothing sent".into()
            } else {
                format!("{} ({} bytes, {ended})", excerpt(data, secrets), data.len())
            },
        };
        out.fail_with(ErrorKind::RegexMismatch, vec![f]);
        out.regex_matched = Some(false);
        return;
    }
    out.regex_matched = expect.map(|_| true);
    let took = out.response_time_ms.unwrap_or_default();
    match o.degraded_after_ms {
        Some(limit) if took > limit as f64 => {
            let f = Failure {
                assertion: "degraded_after".into(),
                expected: format!("<= {limit} ms"),
                observed: format!("{took:.0} ms"),
            };
            out.outcome = Outcome::Degraded;
            out.error_kind = Some(ErrorKind::Slow);
            out.error_message = Some(format!(
                "degraded_after: expected {}, got {}",
                f.expected, f.observed
            ));
            out.failures = vec![f];
        }
        _ => out.outcome = Outcome::Up,
    }
}

/// At most 80 bytes of what came, quoted, for messages (the site's
/// secrets hidden as seen around the cut: a server may echo `send`).
fn excerpt(data: &[u8], secrets: &LazySecrets) -> String {
    let shown = secrets.excerpt(data, 0, 80);
    format!("{:?}", shown.trim_end_matches('…'))
}
