//! Integration tests against real Postgres and Kafka (see support.rs).
