//! `[api.connections]` and `[admin.connections]`: how many connections a
//! listener holds and how long an idle or slow one may stay. Without them a
//! client holding idle connections exhausts the process's file descriptors,
//! and then every check fails to connect (a monitor that cries wolf).

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Connections held at once; one more is accepted and closed at once
    /// (and counted in `sitewatch_listener_refused_total`).
    pub max: usize,
    /// Connections one client address may hold, so one client cannot take
    /// every slot (a flood from one address leaves room for the platform's
    /// probes and the scraper).
    pub max_per_address: usize,
    /// A connection on which nothing arrives for this long is closed
    /// (keep-alive between requests included; a WebSocket is pinged more
    /// often than this, so a live client answers in time).
    #[serde(deserialize_with = "duration::de")]
    pub idle_timeout: Duration,
    /// The whole request head (line and headers) must arrive within this
    /// time, so a client dripping one header byte at a time cannot hold a
    /// connection (slowloris).
    #[serde(deserialize_with = "duration::de")]
    pub header_timeout: Duration,
}

impl ConnectionLimits {
    /// The API's defaults: 256 connections, 32 per address, 60 s idle, 10 s
    /// for a head.
    pub const API: ConnectionLimits = ConnectionLimits {
        max: 256,
        max_per_address: 32,
        idle_timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
    };
    /// The admin listener's defaults: 64 connections (probes and one
    /// scraper), 8 per address, 30 s idle, 5 s for a head.
    pub const ADMIN: ConnectionLimits = ConnectionLimits {
        max: 64,
        max_per_address: 8,
        idle_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_secs(5),
    };

    /// Problems with these limits, as (field under the section, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max == 0 {
            out.push(("connections.max", "must be at least 1".to_owned()));
        }
        if self.max_per_address == 0 || self.max_per_address > self.max {
            out.push((
                "connections.max_per_address",
                "must be between 1 and connections.max".to_owned(),
            ));
        }
        for (field, d) in [
            ("connections.idle_timeout", self.idle_timeout),
            ("connections.header_timeout", self.header_timeout),
        ] {
            if d < Duration::from_millis(1) {
                out.push((field, "must be at least 1ms".to_owned()));
            }
        }
        out
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::API
    }
}
