//! Metric names and the Prometheus recorder. Stages record through the
//! `metrics` facade (cheap when nothing is installed, so library users and
//! unit tests pay nothing); the admin listener renders the text format.
//!
//! Names follow Prometheus conventions: `_total` counters, base units
//! (seconds, bytes), labels with a small, fixed set of values — never a
//! site name, which would make the series count grow with the config.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Labelled `outcome` (up, degraded, down, skipped) and `error_kind` (the
/// bounded set of `ErrorKind::as_str`, "none" for a passing check).
pub const CHECKS: &str = "sitewatch_checks_total";
/// Seconds from a check's slot (`scheduled_at`) to its start in a checker:
/// scheduler lateness plus time in Kafka plus time waiting for a check slot.
pub const START_DELAY: &str = "sitewatch_check_start_delay_seconds";
/// The checker's DNS lookups, labelled `result`: ok, nxdomain, servfail,
/// refused, no_answer, timeout, unreachable, error.
pub const DNS_LOOKUPS: &str = "sitewatch_dns_lookups_total";
pub const CHECK_DURATION: &str = "sitewatch_check_duration_seconds";
/// Labelled `phase`: dns, connect, tls, ttfb, transfer.
pub const CHECK_PHASE: &str = "sitewatch_check_phase_seconds";
/// Days left on the certificates seen, as a histogram (no site label).
pub const CERT_DAYS_LEFT: &str = "sitewatch_check_cert_days_left";
/// Alert delivery attempts, by channel and result (delivered, failed, gave_up).
pub const ALERTS: &str = "sitewatch_alert_deliveries_total";
/// Producers replaced because their idempotence state broke.
pub const PRODUCER_RESETS: &str = "sitewatch_kafka_producer_resets_total";
pub const CHECKS_IN_FLIGHT: &str = "sitewatch_checks_in_flight";
pub const SLOTS_PUBLISHED: &str = "sitewatch_scheduler_slots_published_total";
pub const SLOTS_SKIPPED: &str = "sitewatch_scheduler_slots_skipped_total";
pub const LATENESS: &str = "sitewatch_scheduler_lateness_seconds";
pub const SCHEDULED_SITES: &str = "sitewatch_scheduler_sites";
/// Share of sites checked this minute under load shedding (1: none shed).
pub const SHED_SHARE: &str = "sitewatch_scheduler_checked_share";
pub const SHARDS_OWNED: &str = "sitewatch_scheduler_shards_owned";
pub const PRODUCER_QUEUE: &str = "sitewatch_producer_queue_messages";
pub const CONSUMER_LAG: &str = "sitewatch_consumer_lag_messages";
pub const BATCH_ROWS: &str = "sitewatch_persister_batch_rows";
pub const WRITE_DURATION: &str = "sitewatch_persister_write_seconds";
pub const ROWS_WRITTEN: &str = "sitewatch_persister_rows_total";
pub const DLQ_MESSAGES: &str = "sitewatch_dlq_messages_total";
pub const RELOADS: &str = "sitewatch_config_reloads_total";
pub const CONFIG_SITES: &str = "sitewatch_config_sites";
/// Connections closed on arrival because their listener was full, by
/// `listener` (api, admin).
pub const LISTENER_REFUSED: &str = "sitewatch_listener_refused_total";

/// Seconds: from 1 ms to 1 min, denser where checks and lateness live.
const TIME_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];
const ROW_BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Certificate lifetimes: expired, days, weeks, months.
const DAY_BUCKETS: [f64; 9] = [0.0, 1.0, 3.0, 7.0, 14.0, 30.0, 60.0, 90.0, 365.0];

/// Installs the process-wide recorder once and returns its handle; later
/// calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &TIME_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_ROWS.into()), &ROW_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(CERT_DAYS_LEFT.into()), &DAY_BUCKETS)
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        LISTENER_REFUSED,
        "Connections closed on arrival because the listener held its connections.max, by listener"
    );
    describe_counter!(
        ALERTS,
        "Delivery attempts of incident alerts, by channel and result"
    );
    describe_counter!(
        PRODUCER_RESETS,
        "Kafka producers re-created after a fatal or persistent idempotence error"
    );
    describe_counter!(
        CHECKS,
        "Checks finished, by outcome (up, degraded, down, skipped) and error_kind"
    );
    describe_histogram!(
        START_DELAY,
        Unit::Seconds,
        "Time from a check's slot to its start in a checker"
    );
    describe_counter!(
        DNS_LOOKUPS,
        "DNS lookups of the checker, by result (ok, nxdomain, servfail, refused, no_answer, timeout, unreachable, error)"
    );
    describe_histogram!(
        CHECK_PHASE,
        Unit::Seconds,
        "Time per phase of a check (dns, connect, tls, ttfb, transfer); a phase that did not happen is not recorded"
    );
    describe_histogram!(
        CERT_DAYS_LEFT,
        "Days left on the TLS certificates seen by checks"
    );
    describe_histogram!(
        CHECK_DURATION,
        Unit::Seconds,
        "Time from a check's start to its outcome"
    );
    describe_gauge!(CHECKS_IN_FLIGHT, "Checks running in this checker now");
    describe_counter!(SLOTS_PUBLISHED, "Slots published as check requests");
    describe_counter!(
        SLOTS_SKIPPED,
        "Slots recorded as skipped by the scheduler, by reason"
    );
    describe_histogram!(
        LATENESS,
        Unit::Seconds,
        "Time from a slot to the scheduler publishing it"
    );
    describe_gauge!(SCHEDULED_SITES, "Sites this instance schedules now");
    describe_gauge!(
        SHED_SHARE,
        "Share of sites checked this minute under load shedding (1: none shed)"
    );
    describe_gauge!(SHARDS_OWNED, "Scheduler shards this instance owns now");
    describe_gauge!(
        PRODUCER_QUEUE,
        "Messages produced and not yet acknowledged by the broker"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages behind the partition end, by group, topic and partition"
    );
    describe_histogram!(BATCH_ROWS, "Rows per persister write (one transaction)");
    describe_histogram!(
        WRITE_DURATION,
        Unit::Seconds,
        "Time to write one persister batch to Postgres"
    );
    describe_counter!(ROWS_WRITTEN, "Result rows written, by topic");
    describe_counter!(
        DLQ_MESSAGES,
        "Messages sent to the dead-letter topic, by stage"
    );
    describe_counter!(RELOADS, "Configuration reloads, by result (ok, rejected)");
    describe_gauge!(CONFIG_SITES, "Sites in the running configuration");
}
