//! sitewatch: a website-availability monitor.
//!
//! A scheduler publishes one check request per site per interval to Kafka;
//! checkers consume them, check the site over HTTP(S) and publish the outcome;
//! two persisters write outcomes to Postgres, where users query them with SQL.
//!
//! The map:
//! * [`config`]: the TOML file, site files and environment overrides, parsed
//!   once into typed, validated [`config::Settings`].
//! * [`store`]: Postgres: pool, embedded migrations, the `sites` sync.
//! * [`bus`]: Kafka: client configuration (TLS, SASL) and topics.
//! * [`telemetry`]: logging set-up (plain or JSON).

pub mod bus;
pub mod config;
pub mod store;
pub mod telemetry;
