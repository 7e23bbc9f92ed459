//! Maintenance windows of a site: alerts are silenced and results marked
//! while one is on. All times are UTC.
//!
//! ```toml
//! maintenance = [
//!   { from = "2026-12-01T22:00:00Z", to = "2026-12-02T01:00:00Z" },  # once
//!   { daily = "03:00", duration = "15m" },
//!   { weekly = "sun 02:00", duration = "2h" },
//! ]
//! ```

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};

use super::duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    Once {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    Daily {
        at: NaiveTime,
        length: Duration,
    },
    Weekly {
        day: Weekday,
        at: NaiveTime,
        length: Duration,
    },
}

impl Window {
    /// True when `t` falls inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let recurring = |start_day: chrono::NaiveDate, at: NaiveTime, length: &Duration| {
            let start = start_day.and_time(at).and_utc();
            let len = chrono::Duration::from_std(*length).unwrap_or_default();
            start <= t && t < start + len
        };
        match self {
            Window::Once { from, to } => *from <= t && t < *to,
            // A window that started yesterday may still be on.
            Window::Daily { at, length } => [0u64, 1]
                .iter()
                .any(|back| recurring(t.date_naive() - chrono::Days::new(*back), *at, length)),
            Window::Weekly { day, at, length } => (0u64..8).any(|back| {
                let d = t.date_naive() - chrono::Days::new(back);
                d.weekday() == *day && recurring(d, *at, length)
            }),
        }
    }
}

impl Window {
    /// The first occurrence that starts after `now` and no later than
    /// `now + horizon`, as `(start, end)`; `None` when there is none.
    pub fn next_start(
        &self,
        now: DateTime<Utc>,
        horizon: chrono::Duration,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let len = |l: &Duration| chrono::Duration::from_std(*l).unwrap_or_default();
        let within = |start: DateTime<Utc>| start > now && start <= now + horizon;
        let days = (horizon.num_days().max(0) + 2) as u64;
        let each_day = |at: NaiveTime| {
            (0..=days).map(move |d| {
                (now.date_naive() + chrono::Days::new(d))
                    .and_time(at)
                    .and_utc()
            })
        };
        match self {
            Window::Once { from, to } => within(*from).then_some((*from, *to)),
            Window::Daily { at, length } => each_day(*at)
                .find(|s| within(*s))
                .map(|s| (s, s + len(length))),
            Window::Weekly { day, at, length } => each_day(*at)
                .find(|s| s.weekday() == *day && within(*s))
                .map(|s| (s, s + len(length))),
        }
    }
}

/// Parses one window table, or says what is wrong with it.
pub fn parse(item: &toml::Value) -> Result<Window, String> {
    let toml::Value::Table(t) = item else {
        return Err(format!("expected a table, found {}", item.type_str()));
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match t.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Datetime(d)) => Ok(Some(d.to_string())),
            Some(other) => Err(format!(
                "`{key}`: expected a string, found {}",
                other.type_str()
            )),
        }
    };
    let time = |s: &str| {
        NaiveTime::parse_from_str(s.trim(), "%H:%M")
            .map_err(|_| format!("{s:?} is not a time of day like \"02:30\" (UTC)"))
    };
    let length = || -> Result<Duration, String> {
        let d = duration::parse(&text("duration")?.ok_or("`duration` is required")?)?;
        if d.is_zero() || d > Duration::from_secs(7 * 86_400) {
            return Err("`duration` must be between 1s and 7 days".into());
        }
        Ok(d)
    };
    let known = ["from", "to", "daily", "weekly", "duration"];
    if let Some(k) = t.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("unknown key {k:?} (known: {known:?})"));
    }
    match (text("from")?, text("to")?, text("daily")?, text("weekly")?) {
        (Some(from), Some(to), None, None) => {
            let at = |s: &str| {
                DateTime::parse_from_rfc3339(s)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|e| format!("{s:?}: {e} (write e.g. \"2026-12-01T22:00:00Z\")"))
            };
            let (from, to) = (at(&from)?, at(&to)?);
            if from >= to {
                return Err("`from` must be before `to`".into());
            }
            Ok(Window::Once { from, to })
        }
        (None, None, Some(at), None) => Ok(Window::Daily {
            at: time(&at)?,
            length: length()?,
        }),
        (None, None, None, Some(spec)) => {
            let (day, at) = spec
                .trim()
                .split_once(' ')
                .ok_or_else(|| format!("{spec:?}: write e.g. \"sun 02:00\""))?;
            let day: Weekday = day
                .parse()
                .map_err(|_| format!("{day:?} is not a day of the week"))?;
            Ok(Window::Weekly {
                day,
                at: time(at)?,
                length: length()?,
            })
        }
        _ => Err(
            "give `from` and `to`, or `daily = \"HH:MM\"`, or `weekly = \"sun HH:MM\"` with a `duration`"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(text: &str) -> Result<Window, String> {
        let v: toml::Table = toml::from_str(&format!("w = {text}")).unwrap();
        parse(&v["w"])
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_contain_their_times() {
        let once =
            window(r#"{ from = "2026-12-01T22:00:00Z", to = "2026-12-02T01:00:00Z" }"#).unwrap();
        assert!(once.contains(at("2026-12-02T00:30:00Z")));
        assert!(!once.contains(at("2026-12-02T01:00:00Z")));
        let daily = window(r#"{ daily = "23:30", duration = "1h" }"#).unwrap();
        assert!(
            daily.contains(at("2026-12-05T00:15:00Z")),
            "started the day before"
        );
        assert!(!daily.contains(at("2026-12-05T01:00:00Z")));
        // 2026-11-29 is a Sunday.
        let weekly = window(r#"{ weekly = "sun 02:00", duration = "2h" }"#).unwrap();
        assert!(weekly.contains(at("2026-11-29T03:59:00Z")));
        assert!(!weekly.contains(at("2026-11-30T03:00:00Z")));
    }

    #[test]
    fn next_start_is_the_first_start_within_the_horizon() {
        let week = chrono::Duration::days(7);
        let now = at("2026-12-01T12:00:00Z"); // a Tuesday
        let once =
            window(r#"{ from = "2026-12-03T22:00:00Z", to = "2026-12-04T01:00:00Z" }"#).unwrap();
        assert_eq!(
            once.next_start(now, week),
            Some((at("2026-12-03T22:00:00Z"), at("2026-12-04T01:00:00Z")))
        );
        assert_eq!(once.next_start(now, chrono::Duration::days(1)), None);
        assert_eq!(
            once.next_start(at("2026-12-03T23:00:00Z"), week),
            None,
            "already on"
        );
        let daily = window(r#"{ daily = "03:00", duration = "15m" }"#).unwrap();
        assert_eq!(
            daily.next_start(now, week),
            Some((at("2026-12-02T03:00:00Z"), at("2026-12-02T03:15:00Z")))
        );
        let today = window(r#"{ daily = "13:00", duration = "1h" }"#).unwrap();
        assert_eq!(
            today.next_start(now, week).map(|w| w.0),
            Some(at("2026-12-01T13:00:00Z"))
        );
        let weekly = window(r#"{ weekly = "sun 02:00", duration = "2h" }"#).unwrap();
        assert_eq!(
            weekly.next_start(now, week).map(|w| w.0),
            Some(at("2026-12-06T02:00:00Z"))
        );
        assert_eq!(weekly.next_start(now, chrono::Duration::days(2)), None);
    }

    #[test]
    fn bad_windows_say_why() {
        for bad in [
            r#"{ from = "2026-12-02T00:00:00Z", to = "2026-12-01T00:00:00Z" }"#,
            r#"{ daily = "25:00", duration = "1h" }"#,
            r#"{ weekly = "someday 02:00", duration = "1h" }"#,
            r#"{ daily = "02:00" }"#,
            r#"{ at = "02:00" }"#,
            r#""always""#,
        ] {
            assert!(window(bad).is_err(), "{bad}");
        }
    }
}
