//! `sitewatch alert test`: sends a test notification through one channel
//! and prints what the channel answered, so that an operator can check
//! credentials and addresses before an incident does. Paging channels
//! (PagerDuty, Opsgenie) get a trigger and then its resolve, under a key of
//! the test's own, so no real alert is touched.

use std::process::ExitCode;

use clap::Subcommand;

use super::ConfigPath;
use crate::alerts::{Deliverer, Notice};
use crate::config::Settings;

#[derive(Subcommand)]
pub enum AlertAction {
    /// Send a test notification through a channel and print its answer.
    /// Exit status: 0 delivered, 1 not, 78 no such channel.
    Test {
        #[command(flatten)]
        config: ConfigPath,
        /// The channel's `name` in `[[alerts.channels]]`.
        #[arg(long)]
        channel: String,
    },
}

impl AlertAction {
    pub fn config(&self) -> &ConfigPath {
        match self {
            AlertAction::Test { config, .. } => config,
        }
    }
}

/// Runs `action`; prints the answer on stdout, a failure on stderr.
pub async fn alert(settings: &Settings, action: AlertAction) -> ExitCode {
    let AlertAction::Test { channel, .. } = action;
    let Some(ch) = settings.alerts.channel(&channel) else {
        let channels = &settings.alerts.channels;
        complain!("{}", crate::config::unknown_channel(&channel, channels));
        return ExitCode::from(super::EXIT_CONFIG);
    };
    let deliverer = match Deliverer::new(&settings.alerts, &settings.checker.user_agent) {
        Ok(d) => d,
        Err(e) => {
            complain!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let notice = Notice::test(&ch.name, &crate::instance::instance_name());
    let answer = deliverer.deliver(ch, &notice).await;
    match &answer.error {
        None => {
            say!("channel {} ({}): delivered", ch.name, ch.kind());
            say!("answer: {}", answer.text);
            ExitCode::SUCCESS
        }
        Some(e) => {
            complain!("channel {} ({}): not delivered: {e}", ch.name, ch.kind());
            if !answer.text.is_empty() {
                complain!("answer: {}", answer.text);
            }
            ExitCode::FAILURE
        }
    }
}
