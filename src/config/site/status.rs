//! `expect_status`: the HTTP status codes a site counts as healthy.

use std::fmt;
use std::ops::RangeInclusive;

/// A set of accepted HTTP status codes, e.g. `200-399` or `200, 301`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

impl StatusSet {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for StatusSet {
    type Err = String;

    /// Parses the text form written by `Display`: `200-399`, `200,301-302`,
    /// `2xx`.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let value = match item.parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => toml::Value::String(item.to_owned()),
            };
            ranges.push(parse_status_item(&value)?);
        }
        if ranges.is_empty() {
            return Err("no status codes given".into());
        }
        Ok(StatusSet(ranges))
    }
}

pub(super) fn parse_status_item(v: &toml::Value) -> Result<RangeInclusive<u16>, String> {
    let code = |n: i64| -> Result<u16, String> {
        if (100..=599).contains(&n) {
            Ok(n as u16)
        } else {
            Err(format!("{n} is not an HTTP status code (100-599)"))
        }
    };
    match v {
        toml::Value::Integer(n) => code(*n).map(|c| c..=c),
        toml::Value::String(s) => {
            let s = s.trim();
            if let Some(d) = s.strip_suffix("xx").and_then(|d| d.parse::<i64>().ok()) {
                let lo = code(d * 100)?;
                return Ok(lo..=lo + 99);
            }
            let (a, b) = s.split_once('-').ok_or_else(|| {
                format!("{s:?} is not a status code, range (\"200-299\") or class (\"2xx\")")
            })?;
            let lo = code(
                a.trim()
                    .parse()
                    .map_err(|_| format!("{s:?}: bad range start"))?,
            )?;
            let hi = code(
                b.trim()
                    .parse()
                    .map_err(|_| format!("{s:?}: bad range end"))?,
            )?;
            if lo > hi {
                return Err(format!("{s:?}: range start is above its end"));
            }
            Ok(lo..=hi)
        }
        other => Err(format!(
            "expected a status code or range, found {}",
            other.type_str()
        )),
    }
}
