//! Response-time charts as inline SVG, drawn on the server so the page
//! reads without JavaScript: p50 and p95 as lines over time, broken where
//! a bucket had no response (no line drawn through a gap).

use std::fmt::Write;

use chrono::{DateTime, Duration, Timelike, Utc};

use super::detail::Point;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
/// Room for the y-axis labels on the left and the x-axis labels below.
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// An SVG of `points` between `from` and `to`, buckets `step` apart;
/// `caption` is its accessible name (escaped here).
pub fn svg(
    points: &[Point],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
    caption: &str,
) -> String {
    let top = points
        .iter()
        .filter_map(|p| p.p95_ms.or(p.p50_ms))
        .fold(0.0_f64, f64::max);
    let max = nice_ceiling(top);
    let span = (to - from).num_milliseconds().max(1) as f64;
    let x =
        |t: DateTime<Utc>| LEFT + (WIDTH - LEFT) * ((t - from).num_milliseconds() as f64 / span);
    let y = |ms: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - ms / max);
    let mut out = String::with_capacity(4096);
    let caption = minijinja::HtmlEscape(caption);
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{caption}"><title>{caption}</title>"#
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = max * frac;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            y = y(v),
            lx = LEFT - 4.0,
            ty = y(v) + 4.0,
            label = ms_label(v),
        );
    }
    for t in x_ticks(from, to) {
        let label = if to - from > Duration::days(2) {
            t.format("%a %d").to_string()
        } else {
            t.format("%H:%M").to_string()
        };
        let _ = write!(
            out,
            r#"<text class="axis" x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            x(t),
            HEIGHT - 4.0
        );
    }
    for (class, pick) in [
        ("p95", (|p: &Point| p.p95_ms) as fn(&Point) -> Option<f64>),
        ("p50", |p: &Point| p.p50_ms),
    ] {
        for run in runs(points, step, pick) {
            out.push_str(r#"<polyline class=""#);
            out.push_str(class);
            out.push_str(r#"" points=""#);
            // A run of one point is drawn as a dot (round caps on a
            // zero-length line).
            let pts: Vec<(f64, f64)> = run.iter().map(|(t, v)| (x(*t), y(*v))).collect();
            let pts = if pts.len() == 1 {
                vec![pts[0], pts[0]]
            } else {
                pts
            };
            for (i, (px, py)) in pts.iter().enumerate() {
                let sep = if i == 0 { "" } else { " " };
                let _ = write!(out, "{sep}{px:.1},{py:.1}");
            }
            out.push_str(r#""/>"#);
        }
    }
    out.push_str("</svg>");
    out
}

/// Unbroken stretches of values: a bucket without a value, or more than
/// one step between points, ends a stretch.
fn runs(
    points: &[Point],
    step: Duration,
    pick: fn(&Point) -> Option<f64>,
) -> Vec<Vec<(DateTime<Utc>, f64)>> {
    let mut runs: Vec<Vec<(DateTime<Utc>, f64)>> = Vec::new();
    let mut last: Option<DateTime<Utc>> = None;
    for p in points {
        match pick(p) {
            Some(v) => {
                let joined = last.is_some_and(|l| p.at - l <= step);
                if !joined || runs.is_empty() {
                    runs.push(Vec::new());
                }
                runs.last_mut().expect("pushed").push((p.at, v));
                last = Some(p.at);
            }
            None => last = None,
        }
    }
    runs
}

/// Labels along the time axis: every 6 hours, or every day.
fn x_ticks(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let every = if to - from > Duration::days(2) {
        Duration::days(1)
    } else {
        Duration::hours(6)
    };
    let start = from
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(from);
    let hours = every.num_hours() as u32;
    let start = start - Duration::hours(i64::from(start.hour() % hours.min(24)));
    let mut t = start + every;
    let mut out = Vec::new();
    while t < to {
        if t > from {
            out.push(t);
        }
        t += every;
    }
    out
}

/// The smallest 1, 2 or 5 × 10ⁿ ms at or above `v` (10 ms at least).
pub fn nice_ceiling(v: f64) -> f64 {
    let mut unit = 10.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if unit * m >= v {
                return unit * m;
            }
        }
        unit *= 10.0;
    }
}

/// `250 ms`, `1.5 s`.
pub fn ms_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", (ms / 100.0).round() / 10.0)
    } else {
        format!("{} ms", ms.round())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(min: i64, p50: Option<f64>) -> Point {
        Point {
            at: DateTime::from_timestamp(0, 0).unwrap() + Duration::minutes(min),
            checks: 1,
            p50_ms: p50,
            p95_ms: p50.map(|v| v * 2.0),
        }
    }

    #[test]
    fn gaps_break_the_line() {
        let pts = [
            point(0, Some(10.0)),
            point(15, Some(12.0)),
            point(30, None),
            point(45, Some(11.0)),
            point(90, Some(9.0)),
        ];
        let r = runs(&pts, Duration::minutes(15), |p| p.p50_ms);
        let lens: Vec<usize> = r.iter().map(Vec::len).collect();
        assert_eq!(
            lens,
            [2, 1, 1],
            "an empty bucket and a missing one both break it"
        );
    }

    #[test]
    fn the_scale_is_a_round_number_above_the_top() {
        assert_eq!(nice_ceiling(0.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(480.0), 500.0);
        assert_eq!(nice_ceiling(501.0), 1000.0);
        assert_eq!(ms_label(1500.0), "1.5 s");
        assert_eq!(ms_label(250.0), "250 ms");
    }

    #[test]
    fn the_svg_has_both_percentiles_and_one_dot_for_a_lone_point() {
        let from = DateTime::from_timestamp(0, 0).unwrap();
        let pts = [point(0, Some(10.0))];
        let s = svg(
            &pts,
            from,
            from + Duration::hours(24),
            Duration::minutes(15),
            "x",
        );
        assert_eq!(s.matches(r#"class="p50""#).count(), 1);
        assert_eq!(s.matches(r#"class="p95""#).count(), 1);
        assert!(s.contains(r#"points="48.0,"#), "{s}");
        assert_eq!(s.matches("<text class=\"axis\"").count(), 3 + 3, "{s}");
    }
}
