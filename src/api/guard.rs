//! Who may call the API and how much: bearer tokens (kept as SHA-256
//! digests and compared in constant time; 10 failed attempts a minute per client address, then 429), a
//! per-token rate limit (requests per minute, fixed window) and a
//! per-token limit on requests in progress (an open WebSocket is one). Refusals
//! are 401 and 429, the latter with `Retry-After` (RFC 9110 section 10.2.3).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use sha2::{Digest, Sha256};

use crate::config::Secret;

#[derive(Clone)]
pub struct Guard {
    /// SHA-256 of each token: the tokens themselves are not kept.
    tokens: Arc<Vec<[u8; 32]>>,
    /// [`token_id`] of each token, by the same index.
    ids: Arc<Vec<String>>,
    per_minute: u32,
    in_flight: usize,
    state: Arc<Mutex<HashMap<usize, Usage>>>,
    /// Failed authentications per client address, this minute.
    guesses: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
    /// `api.failed_auth_per_minute`: past it, a client address's requests
    /// get 429 without any token being compared, so a token cannot be
    /// guessed at the speed of the network. 0: no limit.
    guesses_per_minute: u32,
}

/// Addresses remembered at most; the oldest windows go first past this.
const GUESSERS_KEPT: usize = 10_000;

struct Usage {
    window: Instant,
    count: u32,
    slots: Arc<Semaphore>,
}

impl Usage {
    /// Counts one request in this minute's window (a new window once a
    /// minute has passed); `Err` holds the seconds until the window resets
    /// when `per_minute` are used up.
    fn take(&mut self, per_minute: u32) -> Result<(), u64> {
        if self.window.elapsed() >= Duration::from_secs(60) {
            self.window = Instant::now();
            self.count = 0;
        }
        if self.count >= per_minute {
            return Err(60u64.saturating_sub(self.window.elapsed().as_secs()).max(1));
        }
        self.count += 1;
        Ok(())
    }
}

impl Guard {
    pub fn new(tokens: Vec<Secret>, per_minute: u32, in_flight: usize, guesses: u32) -> Self {
        Guard {
            ids: Arc::new(tokens.iter().map(|t| token_id(t.expose())).collect()),
            tokens: Arc::new(
                tokens
                    .iter()
                    .map(|t| Sha256::digest(t.expose().as_bytes()).into())
                    .collect(),
            ),
            per_minute,
            in_flight,
            state: Arc::default(),
            guesses: Arc::default(),
            guesses_per_minute: guesses,
        }
    }

    /// Seconds until `ip` may try again, when it has used up its guesses.
    fn guessing(&self, ip: IpAddr) -> Option<u64> {
        let guesses = self.guesses.lock().expect("guesses lock");
        let (since, n) = guesses.get(&ip)?;
        let left = Duration::from_secs(60).checked_sub(since.elapsed())?;
        (self.guesses_per_minute > 0 && *n >= self.guesses_per_minute)
            .then(|| left.as_secs().max(1))
    }

    /// Counts a failed authentication from `ip`.
    fn guessed(&self, ip: IpAddr) {
        let mut guesses = self.guesses.lock().expect("guesses lock");
        if guesses.len() >= GUESSERS_KEPT && !guesses.contains_key(&ip) {
            guesses.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(60));
            if guesses.len() >= GUESSERS_KEPT {
                guesses.clear();
            }
        }
        let entry = guesses.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    fn token_index(&self, given: &str) -> Option<usize> {
        // Fail closed: no credentials never match, even if an empty token
        // slipped past the config's validation.
        if given.trim().is_empty() {
            return None;
        }
        // Digests of equal length, every one compared in full whatever
        // matches: timing tells neither the tokens' lengths nor how much of
        // a guess was right.
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if constant_time_eq(t, &given) {
                found = Some(i);
            }
        }
        found
    }
}

/// A token's public name: 16 hex digits of SHA-256 over a domain prefix and
/// the token. It is stored with the token's on-demand results (never the
/// token), so only that token reads them; it reveals nothing usable of a
/// long random token.
pub fn token_id(token: &str) -> String {
    let digest = Sha256::digest(format!("sitewatch-token-id:{token}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal digests, compared in constant time (`subtle`, the RustCrypto
/// crate for it; both sides are 32-byte SHA-256 digests).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The credentials of an `Authorization: Bearer <token>` value, or `None`
/// for another scheme or no token. The scheme is case-insensitive
/// (RFC 9110 section 11.1; RFC 6750 section 2.1).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 429 with `Retry-After: retry` seconds (RFC 9110 section 10.2.3).
fn too_many(message: &str, retry: u64) -> Response {
    let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry));
    r
}

fn refuse(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The middleware: authenticates, then counts against the token's limits.
pub async fn check(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(retry) = ip.and_then(|ip| guard.guessing(ip)) {
        return too_many("too many failed authentications from this address", retry);
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    let Some(who) = given.and_then(|g| guard.token_index(g)) else {
        if let Some(ip) = ip {
            guard.guessed(ip);
        }
        let mut r = refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    let permit = {
        let mut state = guard.state.lock().expect("guard lock");
        let usage = state.entry(who).or_insert_with(|| Usage {
            window: Instant::now(),
            count: 0,
            slots: Arc::new(Semaphore::new(guard.in_flight)),
        });
        if let Err(retry) = usage.take(guard.per_minute) {
            return too_many("rate limit reached for this token", retry);
        }
        match usage.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => return too_many("too many requests in progress for this token", 1),
        }
    };
    let permit = Arc::new(permit);
    request.extensions_mut().insert(Caller {
        who,
        guard: guard.clone(),
        _permit: permit.clone(),
    });
    let response = next.run(request).await;
    drop(permit);
    response
}

/// The authenticated caller of a request, for a handler whose work outlives
/// the request (a WebSocket): holding it holds one of the token's
/// `max_in_flight` slots, so a token's sockets count against that limit,
/// and [`Caller::take`] counts further work against its rate limit.
#[derive(Clone)]
pub struct Caller {
    who: usize,
    guard: Guard,
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl Caller {
    /// Counts one more request (a check sent on a WebSocket) against the
    /// token's `requests_per_minute`. `Err` holds the seconds until the
    /// window resets when the limit is reached.
    pub fn take(&self) -> Result<(), u64> {
        let mut state = self.guard.state.lock().expect("guard lock");
        match state.get_mut(&self.who) {
            Some(usage) => usage.take(self.guard.per_minute),
            None => Ok(()),
        }
    }

    /// The caller's [`token_id`].
    pub fn token_id(&self) -> &str {
        &self.guard.ids[self.who]
    }

    /// The token's `max_in_flight`.
    pub fn in_flight_limit(&self) -> usize {
        self.guard.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_value_with_a_token_has_credentials() {
        assert_eq!(bearer_credentials("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("BEARER   abc"), Some("abc"));
        assert_eq!(bearer_credentials("Bearer "), None);
        assert_eq!(bearer_credentials("Bearer"), None);
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials(""), None);
    }

    #[test]
    fn an_empty_token_never_matches_missing_credentials() {
        let guard = Guard::new(vec![Secret::new(""), Secret::new("tok")], 10, 1, 10);
        assert_eq!(guard.token_index(""), None);
        assert_eq!(guard.token_index("  "), None);
        assert_eq!(guard.token_index("tok"), Some(1));
        assert_eq!(guard.token_index("to"), None);
    }
}
