//! Human-readable durations (`500ms`, `30s`, `5m`, `1h30m`) for settings.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write e.g. \"500ms\", \"30s\", \"5m\"")
    })
}

/// `#[serde(deserialize_with = "duration::de")]` for `Duration` fields.
pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// `#[serde(default, deserialize_with = "duration::de_opt")]` for
/// `Option<Duration>` fields.
pub fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de(d).map(Some)
}

/// Formats a duration the way an operator wrote it (`30s`, `5m`).
pub fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse("30").is_err());
        assert!(parse("soon").is_err());
    }
}
