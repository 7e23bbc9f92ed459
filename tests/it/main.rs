//! Integration tests against the real Postgres and Apache Kafka broker of
//! the dev stack (`make up`), isolated by random database, topic and group
//! names so they run in parallel and leave each other alone.

mod accounting;
mod alerts;
mod api;
mod bombs;
mod browserlike;
mod bus;
mod checks;
mod cli;
mod dlq;
mod dns;
mod evidence;
mod failover;
mod faults;
mod flapping;
mod grafana;
mod hostile;
mod incidents;
mod kinds;
mod leaks;
mod limits;
mod ops;
mod pairing;
mod pg_tls;
mod pipeline;
mod receivers;
mod recovery;
mod reload;
mod rollups;
mod stack;
mod status_badges;
mod status_page;
mod store;
mod support;
mod target;
