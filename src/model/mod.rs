//! The messages stages exchange through Kafka: version 1 for HTTP checks,
//! version 2 for the other kinds (`tcp://`).
//!
//! Every payload is JSON with a `v` field. Decoders tolerate unknown fields
//! (so a newer producer can add some) and refuse an unknown version, which
//! sends the message to the dead-letter topic instead of guessing. The key of
//! every message is the site name, so one site's checks stay ordered on one
//! partition.
//!
//! * `status_request_created` carries a [`CheckRequest`]: everything a checker
//!   needs, so checkers hold no site state.
//! * `status_request_succeeded` and `status_request_failed` carry a
//!   [`CheckOutcome`]: succeeded when an HTTP response came back (whatever its
//!   status), failed when none did, or when the check was skipped.

use serde::{Deserialize, Serialize};

mod check_id;
mod outcome;
mod request;
pub mod secrets;

pub use check_id::{slot_of, time_leading_range, CheckIds};
pub use outcome::{CheckOutcome, ErrorKind, Evidence, Failure, Outcome, Timing, TlsDetails};
pub use request::{
    CheckKind, CheckOptions, CheckRequest, HeaderRule, IpFamily, JsonExpect, JsonRule, LATE_AFTER,
};
pub use secrets::{redacted_url, LazySecrets, Secrets, REDACTED};
/// The message schema version of HTTP checks, which every build reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The version of the messages of the other check kinds: a build that
/// knows only HTTP refuses them into the dead-letter topic instead of
/// mis-checking a `tcp://` URL as HTTP. This build reads both.
pub const KINDS_SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Emitted by the scheduler for a slot.
    Scheduled,
    /// Asked for by a user (API, `sitewatch check`).
    OnDemand,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Scheduled => "scheduled",
            Origin::OnDemand => "on_demand",
        }
    }
}

/// Why a message could not be decoded (it goes to the dead-letter topic).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload missing")]
    Empty,
    #[error("not valid JSON for this topic: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "unsupported schema version {0} (this build reads {SCHEMA_VERSION} to {KINDS_SCHEMA_VERSION})"
    )]
    Version(u32),
    #[error("invalid message: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

fn check_version(payload: Option<&[u8]>) -> Result<&[u8], DecodeError> {
    let bytes = payload
        .filter(|b| !b.is_empty())
        .ok_or(DecodeError::Empty)?;
    let VersionOnly { v } = serde_json::from_slice(bytes)?;
    if !(SCHEMA_VERSION..=KINDS_SCHEMA_VERSION).contains(&v) {
        return Err(DecodeError::Version(v));
    }
    Ok(bytes)
}

pub fn decode_request(payload: Option<&[u8]>) -> Result<CheckRequest, DecodeError> {
    let req: CheckRequest = serde_json::from_slice(check_version(payload)?)?;
    if req.site.is_empty() {
        return Err(DecodeError::Invalid("empty site".into()));
    }
    if req.timeout_ms == 0 {
        return Err(DecodeError::Invalid("timeout_ms is 0".into()));
    }
    Ok(req)
}

pub fn decode_outcome(payload: Option<&[u8]>) -> Result<CheckOutcome, DecodeError> {
    let out: CheckOutcome = serde_json::from_slice(check_version(payload)?)?;
    if out.site.is_empty() {
        return Err(DecodeError::Invalid("empty site".into()));
    }
    Ok(out)
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("message types always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;

    fn request() -> CheckRequest {
        let slot = DateTime::parse_from_rfc3339("2026-01-01T00:00:05Z")
            .unwrap()
            .with_timezone(&Utc);
        CheckRequest {
            v: 1,
            check_id: CheckIds::TIME_LEADING.scheduled("a", slot),
            site: "a".into(),
            origin: Origin::Scheduled,
            scheduled_at: slot,
            deadline: slot + chrono::Duration::seconds(30),
            url: "https://a.example/".into(),
            method: "GET".into(),
            headers: BTreeMap::new(),
            timeout_ms: 5000,
            regex: Some("ok".into()),
            expect_status: "200-399".into(),
            reuse_connection: false,
            public_only: false,
            options: None,
            requested_by: None,
            late: false,
        }
    }

    #[test]
    fn round_trip_and_unknown_fields_tolerated() {
        let r = request();
        let mut json: serde_json::Value = serde_json::from_slice(&encode(&r)).unwrap();
        json["added_in_a_later_build"] = serde_json::json!(true);
        let back = decode_request(Some(&serde_json::to_vec(&json).unwrap())).unwrap();
        assert_eq!(back, r);
    }

    /// Mutated messages never panic the decoders; whatever decodes
    /// re-encodes to something that decodes to the same value.
    #[test]
    fn fuzzed_payloads_decode_or_fail_cleanly() {
        let mut rng = crate::fuzz::Rng::new(0x5174);
        let mut req = request();
        req.options = Some(CheckOptions {
            forbidden_regex: Some("err".into()),
            expect_headers: vec![HeaderRule {
                name: "x".into(),
                matches: Some("y".into()),
                absent: false,
            }],
            ..CheckOptions::default()
        });
        let mut out = CheckOutcome::skipped(&req, ErrorKind::MissedSlot, "m".into(), "c");
        out.timing = Some(Timing::default());
        out.failures = vec![Failure {
            assertion: "a".into(),
            expected: "e".into(),
            observed: "o".into(),
        }];
        let seeds = [encode(&req), encode(&out)];
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..crate::fuzz::iterations() {
            for seed in &seeds {
                let bytes = crate::fuzz::mutate(&mut rng, seed);
                match decode_request(Some(&bytes)) {
                    Ok(r) => {
                        ok += 1;
                        assert_eq!(decode_request(Some(&encode(&r))).unwrap(), r);
                    }
                    Err(_) => refused += 1,
                }
                match decode_outcome(Some(&bytes)) {
                    Ok(o) => {
                        ok += 1;
                        assert_eq!(decode_outcome(Some(&encode(&o))).unwrap(), o);
                    }
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    }

    #[test]
    fn bad_payloads_say_why() {
        assert!(matches!(decode_request(None), Err(DecodeError::Empty)));
        assert!(matches!(
            decode_request(Some(b"not json")),
            Err(DecodeError::Json(_))
        ));
        let mut json: serde_json::Value = serde_json::from_slice(&encode(&request())).unwrap();
        // Version 2 (the other check kinds) is read; 3 goes to the DLQ.
        json["v"] = serde_json::json!(KINDS_SCHEMA_VERSION);
        json["url"] = serde_json::json!("tcp://a.example:22");
        let tcp = decode_request(Some(&serde_json::to_vec(&json).unwrap())).unwrap();
        assert_eq!(CheckKind::of_url(&tcp.url), Some(CheckKind::Tcp));
        json["v"] = serde_json::json!(3);
        assert!(matches!(
            decode_request(Some(&serde_json::to_vec(&json).unwrap())),
            Err(DecodeError::Version(3))
        ));
        assert!(matches!(
            decode_outcome(Some(br#"{"v":1,"site":"a"}"#)),
            Err(DecodeError::Json(_))
        ));
    }
}
