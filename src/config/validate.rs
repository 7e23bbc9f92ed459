//! The checks of [`RawSettings`] that serde cannot express: ranges,
//! relations between keys, topic names, files that must exist. They touch
//! the file system (certificate paths) but never the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration;
use super::kafka::SASL_MECHANISMS;
use super::problem::Problem;
use super::settings::{RawSettings, MIN_INTERVAL_FLOOR};

/// Kafka's rule for topic names.
fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_file(file: &Path, key: &str, path: &Option<PathBuf>, out: &mut Vec<Problem>) {
    if let Some(p) = path {
        if let Err(e) = std::fs::metadata(p) {
            out.push(Problem::field(
                file,
                key,
                format!("cannot read {}: {e}", p.display()),
            ));
        }
    }
}

impl RawSettings {
    /// Checks what the types cannot; touches the file system (certificate
    /// paths) but never the network.
    pub fn validate(&self, file: &Path) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, msg: String| out.push(Problem::field(file, field, msg));

        if self.postgres.pool_size == 0 {
            bad("postgres.pool_size", "must be at least 1".into());
        }
        match super::pg_url::split(&self.postgres.url) {
            Err(e) => bad("postgres.url", e),
            Ok((rest, tls)) => {
                if let Err(e) = rest.parse::<tokio_postgres::Config>() {
                    // tokio-postgres errors do not echo the string, so no
                    // password leaks; their reason is in the source.
                    let mut why = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        why = format!("{why}: {s}");
                        source = s.source();
                    }
                    bad("postgres.url", format!("not a valid Postgres URL: {why}"));
                }
                for (name, path) in [
                    ("sslrootcert", &tls.root_cert),
                    ("sslcert", &tls.cert),
                    ("sslkey", &tls.key),
                ] {
                    if let Some(p) = path {
                        if let Err(e) = std::fs::metadata(p) {
                            bad(
                                "postgres.url",
                                format!("{name} {}: cannot read: {e}", p.display()),
                            );
                        }
                    }
                }
                if tls.root_cert.is_some() && self.postgres.ca_path.is_some() {
                    bad(
                        "postgres.ca_path",
                        "the CA is given twice: here and as sslrootcert in postgres.url; keep one"
                            .into(),
                    );
                }
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            bad("kafka.brokers", "must list at least one host:port".into());
        }
        if self.kafka.partitions < 1 {
            bad("kafka.partitions", "must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.scheduler.shards) {
            bad("scheduler.shards", "must be between 1 and 10000".into());
        }
        // Past that many slots of the shortest interval beyond its saved
        // progress a site's checks are held (see `scheduler::book`): a
        // shed run, a watermark period or a Postgres blip must stay short
        // of it.
        let unsaved = self.scheduler.min_interval * self.scheduler.backfill_limit;
        if unsaved < Duration::from_secs(300) {
            bad(
                "scheduler.backfill_limit",
                format!(
                    "must cover at least 5 minutes of scheduler.min_interval ({}), so at least {}",
                    super::duration::show(self.scheduler.min_interval),
                    300_000u128.div_ceil(self.scheduler.min_interval.as_millis().max(1))
                ),
            );
        }
        // Two changes are one incident opened and resolved: counting them as
        // flapping would hold back every recovery inside the window.
        if self.incidents.flap_changes != 0 && !(3..=100).contains(&self.incidents.flap_changes) {
            bad(
                "incidents.flap_changes",
                "must be 0 (no flap damping) or between 3 and 100".into(),
            );
        }
        if self.incidents.flap_window < Duration::from_secs(1)
            || self.incidents.flap_window > Duration::from_secs(86_400)
        {
            bad(
                "incidents.flap_window",
                "must be between 1s and 1 day".into(),
            );
        }
        if self.scheduler.failover_timeout < Duration::from_secs(1) {
            bad(
                "scheduler.failover_timeout",
                "must be at least 1s (leases are renewed every third of it)".into(),
            );
        }
        if self.api.enabled && self.api.tokens.is_empty() && self.api.tokens_file.is_none() {
            bad(
                "api.tokens",
                "the API needs at least one token (`tokens`, `tokens_file` or SITEWATCH__API__TOKENS)".into(),
            );
        }
        if self.api.requests_per_minute == 0 || self.api.max_in_flight == 0 {
            bad(
                "api.requests_per_minute",
                "limits must be at least 1".into(),
            );
        }
        if self.kafka.replication_factor < 1 {
            bad("kafka.replication_factor", "must be at least 1".into());
        }
        let t = &self.kafka.topics;
        for (key, name) in [
            ("kafka.topics.created", &t.created),
            ("kafka.topics.succeeded", &t.succeeded),
            ("kafka.topics.failed", &t.failed),
            ("kafka.topics.dlq", &t.dlq),
        ] {
            if !valid_topic(name) {
                bad(
                    key,
                    format!(
                        "{name:?} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
                    ),
                );
            }
        }
        let names = t.all();
        for (i, a) in names.iter().enumerate() {
            if names[..i].contains(a) {
                bad(
                    "kafka.topics",
                    format!("topic {a:?} is used for two purposes"),
                );
            }
        }
        if let Some(sasl) = &self.kafka.sasl {
            if !SASL_MECHANISMS.contains(&sasl.mechanism.as_str()) {
                bad(
                    "kafka.sasl.mechanism",
                    format!(
                        "{:?} is not supported; use one of {SASL_MECHANISMS:?}",
                        sasl.mechanism
                    ),
                );
            }
            if sasl.username.is_empty() {
                bad("kafka.sasl.username", "must not be empty".into());
            }
            if sasl.password.is_none() && sasl.password_file.is_none() {
                bad(
                    "kafka.sasl.password",
                    "SASL needs `password` or `password_file` (or SITEWATCH__KAFKA__SASL__PASSWORD)".into(),
                );
            }
        }
        let tls = &self.kafka.tls;
        if tls.cert_path.is_some() != tls.key_path.is_some() {
            bad(
                "kafka.tls.key_path",
                "a client certificate needs both `cert_path` and `key_path`".into(),
            );
        }
        // Certificate files are read here so a wrong path or a non-PEM file
        // fails at load with the key named, not as a handshake error later.
        for (key, path) in [
            ("postgres.ca_path", &self.postgres.ca_path),
            ("kafka.tls.ca_path", &tls.ca_path),
            ("kafka.tls.cert_path", &tls.cert_path),
        ] {
            if let Some(p) = path {
                if let Some(msg) = pem_problem(p, "CERTIFICATE") {
                    bad(key, msg);
                }
            }
        }
        if let Some(p) = &tls.key_path {
            if let Some(msg) = pem_problem(p, "PRIVATE KEY") {
                bad("kafka.tls.key_path", msg);
            }
        }
        for (i, p) in self.checker.ca_files.iter().enumerate() {
            if let Some(msg) = pem_problem(p, "CERTIFICATE") {
                bad(&format!("checker.ca_files[{i}]"), msg);
            }
        }
        for (i, server) in self.checker.dns_servers.iter().enumerate() {
            if super::settings::parse_dns_server(server).is_none() {
                bad(
                    &format!("checker.dns_servers[{i}]"),
                    format!(
                        "{server:?} is not an IP address or IP:port (for example \"10.0.0.2:53\")"
                    ),
                );
            }
        }
        if self.scheduler.min_interval < MIN_INTERVAL_FLOOR {
            bad(
                "scheduler.min_interval",
                format!("must be at least {}", duration::show(MIN_INTERVAL_FLOOR)),
            );
        }
        if self.checker.concurrency == 0 {
            bad("checker.concurrency", "must be at least 1".into());
        }
        if self.alerts.max_attempts == 0 {
            bad("alerts.max_attempts", "must be at least 1".into());
        }
        if self.retention.raw < Duration::from_secs(2 * 86_400) {
            bad(
                "retention.raw",
                "must be at least 2 days (partitions are whole days)".into(),
            );
        }
        if self.retention.rollups < self.retention.raw {
            bad(
                "retention.rollups",
                "must be at least retention.raw (hour rollups outlive the raw rows)".into(),
            );
        }
        if self.kafka.stall_timeout < Duration::from_secs(10) {
            bad(
                "kafka.stall_timeout",
                "must be at least 10s (a broker failover takes seconds)".into(),
            );
        }
        if self.kafka.linger > Duration::from_secs(1) {
            bad(
                "kafka.linger",
                "must be at most 1s (every check request waits up to this long)".into(),
            );
        }
        if self.checker.max_per_host == 0 {
            bad("checker.max_per_host", "must be at least 1".into());
        }
        if self.checker.max_body_bytes == 0 {
            bad("checker.max_body_bytes", "must be at least 1".into());
        }
        if self.persister.batch_size == 0 || self.persister.batch_size > 50_000 {
            bad("persister.batch_size", "must be between 1 and 50000".into());
        }
        for (section, limits) in [
            ("api", &self.api.connections),
            ("admin", &self.admin.connections),
        ] {
            for (field, message) in limits.problems() {
                bad(&format!("{section}.{field}"), message);
            }
        }
        for h in &self.checker.cross_origin_headers {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                bad(
                    "checker.cross_origin_headers",
                    format!("{h:?} is not a header name"),
                );
            }
        }
        for (field, t) in [
            ("site_defaults.timeout", self.site_defaults.timeout),
            ("alerts.timeout", self.alerts.timeout),
            ("postgres.connect_timeout", self.postgres.connect_timeout),
        ] {
            if t < Duration::from_millis(1) {
                bad(field, "must be at least 1ms".into());
            }
        }
        if self.persister.batch_timeout.is_zero() {
            bad("persister.batch_timeout", "must be greater than 0".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            bad("log.level", format!("not a valid log filter: {e}"));
        }
        if self.site_defaults.timeout >= self.site_defaults.interval {
            bad(
                "site_defaults.timeout",
                format!(
                    "timeout {} must be shorter than interval {}",
                    duration::show(self.site_defaults.timeout),
                    duration::show(self.site_defaults.interval)
                ),
            );
        }
        check_file(
            file,
            "postgres.password_file",
            &self.postgres.password_file,
            &mut out,
        );
        out
    }
}

/// Why `path` is not a usable PEM file holding a `what` block, if it is not.
/// Only the block markers are looked at; the contents are never echoed.
fn pem_problem(path: &Path, what: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Err(e) => Some(format!("cannot read {}: {e}", path.display())),
        Ok(text) if !text.contains("-----BEGIN ") || !text.contains(what) => Some(format!(
            "{} is not a PEM file with a {what} block",
            path.display()
        )),
        Ok(_) => None,
    }
}
