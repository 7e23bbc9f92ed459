//! Badges of a listed site, as SVG (drawn by `badge-maker`, a port of
//! Shields.io's own badge-maker, with its Verdana text widths) and as a
//! Shields.io endpoint JSON (<https://shields.io/badges/endpoint-badge>:
//! `schemaVersion`, `label`, `message`, `color`, `cacheSeconds`).
//!
//! * `status`: the site's status now, as on the page.
//! * `uptime/{24h,7d,30d,1y}`: `uptime_pct` of `site_uptime` (`1 day`,
//!   `7 days`) or `site_uptime_long` (`30 days`, `365 days`).
//! * `response-time/{24h,7d}`: `p95_ms` of `site_uptime` (`1 day`, `7 days`).

use serde_json::json;

use super::data::Status;
use super::detail::Window;
use super::percent;

/// What a badge shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Status,
    Uptime(Span),
    ResponseTime(Span),
}

/// A badge's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    Day,
    Week,
    Month,
    Year,
}

impl Span {
    /// `24h`, `7d`, `30d`, `1y`, as in the URL.
    pub fn parse(s: &str) -> Option<Span> {
        Some(match s {
            "24h" => Span::Day,
            "7d" => Span::Week,
            "30d" => Span::Month,
            "1y" => Span::Year,
            _ => return None,
        })
    }

    fn short(self) -> &'static str {
        match self {
            Span::Day => "24h",
            Span::Week => "7d",
            Span::Month => "30d",
            Span::Year => "1y",
        }
    }

    /// The `window` value of the view row this span reads.
    pub fn view_window(self) -> &'static str {
        match self {
            Span::Day => "1 day",
            Span::Week => "7 days",
            Span::Month => "30 days",
            Span::Year => "365 days",
        }
    }
}

impl Kind {
    /// From the path after `/badges/{site}/`: `status`, `uptime/7d`,
    /// `response-time/24h` (the extension already taken off). Response
    /// time has no 30-day or 1-year badge: `site_uptime` stops at 7 days.
    pub fn parse(path: &str) -> Option<Kind> {
        match path.split_once('/') {
            None if path == "status" => Some(Kind::Status),
            Some(("uptime", s)) => Span::parse(s).map(Kind::Uptime),
            Some(("response-time", s)) => Span::parse(s)
                .filter(|s| matches!(s, Span::Day | Span::Week))
                .map(Kind::ResponseTime),
            _ => None,
        }
    }
}

/// Label, message and Shields colour name of a badge.
pub struct Face {
    pub label: String,
    pub message: String,
    pub color: &'static str,
}

/// The status badge.
pub fn status(s: Status) -> Face {
    let (message, color) = match s {
        Status::Up => ("up", "brightgreen"),
        Status::Degraded => ("degraded", "yellow"),
        Status::Down => ("down", "red"),
        Status::Flapping => ("flapping", "orange"),
        Status::Maintenance => ("maintenance", "blue"),
        Status::Unknown => ("unknown", "lightgrey"),
    };
    Face {
        label: "status".into(),
        message: message.into(),
        color,
    }
}

/// An uptime or response-time badge from the view row (`None`: no row).
pub fn window(kind: Kind, row: Option<&Window>) -> Face {
    match kind {
        Kind::Uptime(span) => {
            let pct = row.and_then(|w| w.uptime_pct);
            Face {
                label: format!("uptime {}", span.short()),
                message: pct.map_or("no data".into(), |p| format!("{}%", percent(p))),
                color: pct.map_or("lightgrey", |p| match p {
                    p if p >= 99.9 => "brightgreen",
                    p if p >= 99.0 => "green",
                    p if p >= 97.0 => "yellowgreen",
                    p if p >= 95.0 => "yellow",
                    p if p >= 90.0 => "orange",
                    _ => "red",
                }),
            }
        }
        Kind::ResponseTime(span) => {
            let ms = row.and_then(|w| w.p95_ms);
            Face {
                label: format!("p95 response time {}", span.short()),
                message: ms.map_or("no data".into(), |m| format!("{} ms", m.round())),
                color: ms.map_or("lightgrey", |m| match m {
                    m if m < 200.0 => "brightgreen",
                    m if m < 500.0 => "green",
                    m if m < 1000.0 => "yellow",
                    m if m < 2000.0 => "orange",
                    _ => "red",
                }),
            }
        }
        Kind::Status => status(Status::Unknown),
    }
}

impl Face {
    /// The SVG (flat style).
    pub fn svg(&self) -> String {
        badge_maker::BadgeBuilder::new()
            .label(&self.label)
            .message(&self.message)
            .color_parse(self.color)
            .build()
            .map(|b| b.svg())
            // Only a colour that does not parse fails, and ours are
            // Shields names.
            .unwrap_or_default()
    }

    /// The Shields.io endpoint JSON; `cache_seconds` as the page's refresh
    /// (Shields itself waits at least 300 s).
    pub fn shields(&self, cache_seconds: u64) -> serde_json::Value {
        json!({
            "schemaVersion": 1,
            "label": self.label,
            "message": self.message,
            "color": self.color,
            "cacheSeconds": cache_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_kind_or_nothing() {
        assert_eq!(Kind::parse("status"), Some(Kind::Status));
        assert_eq!(Kind::parse("uptime/1y"), Some(Kind::Uptime(Span::Year)));
        assert_eq!(
            Kind::parse("response-time/7d"),
            Some(Kind::ResponseTime(Span::Week))
        );
        for bad in [
            "uptime/2d",
            "response-time/30d",
            "status/x",
            "uptime",
            "",
            "../x",
        ] {
            assert_eq!(Kind::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn faces_carry_the_view_numbers() {
        let row = Window {
            window: "1 day".into(),
            checks: 1440,
            uptime_pct: Some(99.931),
            p50_ms: Some(40.0),
            p95_ms: Some(123.4),
        };
        let up = window(Kind::Uptime(Span::Day), Some(&row));
        assert_eq!((up.message.as_str(), up.color), ("99.931%", "brightgreen"));
        let rt = window(Kind::ResponseTime(Span::Day), Some(&row));
        assert_eq!((rt.message.as_str(), rt.color), ("123 ms", "brightgreen"));
        assert_eq!(window(Kind::Uptime(Span::Year), None).message, "no data");
        let svg = up.svg();
        assert!(svg.starts_with("<svg") && svg.contains("99.931%"), "{svg}");
        assert_eq!(up.shields(30)["message"], "99.931%");
    }
}
