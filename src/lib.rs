//! sitewatch: a website-availability monitor.
//!
//! A scheduler publishes one check request per site per interval to Kafka;
//! checkers consume them, check the site over HTTP(S) and publish the outcome;
//! two persisters write outcomes to Postgres, where users query them with SQL.
//!
//! The map:
//! * [`config`]: the TOML file, site files and environment overrides, parsed
//!   once into typed, validated [`config::Settings`].
//! * [`model`]: the versioned messages on the topics (`CheckRequest`,
//!   `CheckOutcome`) and check ids.
//! * [`scheduler`]: slots aligned to absolute time, publishing, and the
//!   accounting that gives every slot exactly one row.
//! * [`checker`]: the HTTP check and the stage that runs checks from Kafka.
//! * [`persister`]: batched, idempotent writes of outcomes to Postgres.
//! * [`bus`]: Kafka: client settings, producer, consumers with at-least-once
//!   offsets, topics, dead letters.
//! * [`store`]: Postgres: pool, embedded migrations, sites, results, progress.
//! * [`daemon`]: start-up and the stages as tasks, by role.
//! * [`cli`]: the `sitewatch` command line, one module per command.
//! * [`incidents`]: results to per-site state and incidents (one evaluator
//!   at a time across instances), who is told what of them, flap damping;
//!   [`alerts`]: sending those notifications on every channel.
//! * [`shutdown`]: signals to cancellation.
//! * [`net`]: which addresses are public (server-side request forgery).
//! * [`api`]: the public API, the public status page and badges, and the
//!   admin listener (`/healthz`, `/readyz`,
//!   `/metrics`).
//! * [`liveness`]: the stages' beats, read by the admin listener and the
//!   systemd watchdog; [`instance`]: this process's name.
//! * [`systemd`]: `sd_notify` readiness, reload, stopping and the watchdog.
//! * [`telemetry`]: logging set-up (plain or JSON) and metric names.

pub mod alerts;
pub mod api;
pub mod bus;
pub mod checker;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod incidents;
pub mod instance;
pub mod liveness;
pub mod model;
pub mod net;
pub mod persister;
pub mod scheduler;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod telemetry;

#[cfg(test)]
mod fuzz;
