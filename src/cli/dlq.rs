//! `sitewatch dlq list|replay`: the dead-letter topic read without joining
//! a group, and letters sent back to their source topic.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use super::ConfigPath;
use crate::config::{self, Settings};

#[derive(Subcommand)]
pub enum DlqAction {
    /// Print every dead letter: when, from where, by which stage, why.
    List {
        #[command(flatten)]
        config: ConfigPath,
        /// One JSON array (`[]` when there are none) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-publish dead letters (original key and payload) to their source
    /// topic. Replaying twice is harmless: writes are idempotent per check.
    Replay {
        #[command(flatten)]
        config: ConfigPath,
        /// Only letters from this source topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only letters dead-lettered since this time (RFC 3339) or this
        /// long ago (e.g. 1h).
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Print what would be replayed, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = config::parse_duration(text)
        .map_err(|e| format!("not an RFC 3339 time nor a duration: {e}"))?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago).map_err(|e| e.to_string())?)
}

/// Runs `action` against the dead-letter topic of `settings`: reads it whole
/// (30 s at most, no group joined, nothing committed), then lists or
/// replays. `Err` when Kafka cannot be read or a replay cannot be published.
pub async fn dlq(settings: &Settings, action: DlqAction) -> anyhow::Result<()> {
    let topic = &settings.kafka.topics.dlq;
    let letters = crate::bus::read_dead_letters(settings, topic, Duration::from_secs(30))
        .await
        .with_context(|| format!("reading {topic} from {}", settings.kafka.brokers))?;
    match action {
        DlqAction::List { json: true, .. } => {
            // One JSON array, `[]` when there are none.
            say!("{}", serde_json::to_string(&letters)?);
        }
        DlqAction::List { .. } => {
            for l in &letters {
                say!(
                    "{}  {}[{}]@{}  from {}[{}]@{}  by {}  {}",
                    l.at.map_or("-".into(), |t| t.to_rfc3339()),
                    topic,
                    l.dlq_partition,
                    l.dlq_offset,
                    l.source_topic,
                    l.source_partition.map_or("-".into(), |p| p.to_string()),
                    l.source_offset.map_or("-".into(), |o| o.to_string()),
                    l.stage,
                    l.reason
                );
            }
            complain!("{} dead letter(s) on {topic}", letters.len());
        }
        DlqAction::Replay {
            topic: only,
            since,
            dry_run,
            ..
        } => {
            let chosen: Vec<_> = letters
                .iter()
                .filter(|l| only.as_ref().is_none_or(|t| &l.source_topic == t))
                .filter(|l| since.is_none_or(|s| l.at.is_some_and(|at| at >= s)))
                .filter(|l| !l.source_topic.is_empty())
                .collect();
            let publisher = crate::bus::Publisher::new(settings)?;
            for l in &chosen {
                say!(
                    "{} {}[{}]@{} -> {}",
                    if dry_run { "would replay" } else { "replaying" },
                    topic,
                    l.dlq_partition,
                    l.dlq_offset,
                    l.source_topic
                );
                if !dry_run {
                    l.replay(&publisher)
                        .await
                        .with_context(|| format!("publishing to {}", l.source_topic))?;
                }
            }
            say!(
                "{} {} of {} dead letter(s)",
                if dry_run { "would replay" } else { "replayed" },
                chosen.len(),
                letters.len()
            );
        }
    }
    Ok(())
}
