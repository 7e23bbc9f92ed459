//! The `sitewatch` command: parse arguments, load the config, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sitewatch::config::{self, Settings};
use sitewatch::{store, telemetry};

/// Exit status for an invalid configuration (sysexits' EX_CONFIG), so a
/// service manager can tell "fix the config" from "crashed".
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    version,
    about = "Website-availability monitor: schedule, check, persist"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration and report every problem in it.
    Validate {
        #[arg(
            long,
            env = "SITEWATCH_CONFIG",
            default_value = "/etc/sitewatch/sitewatch.toml"
        )]
        config: PathBuf,
    },
    /// Apply database migrations and sync the `sites` table with the config.
    Migrate {
        #[arg(
            long,
            env = "SITEWATCH_CONFIG",
            default_value = "/etc/sitewatch/sitewatch.toml"
        )]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match config::load(&config) {
            Ok(settings) => {
                println!("{}: OK\n{}", config.display(), settings.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{}: {errors}", config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Migrate { config } => {
            let settings = match load(&config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            report(runtime().block_on(migrate(&settings)))
        }
    }
}

fn load(path: &std::path::Path) -> Result<Settings, ExitCode> {
    match config::load(path) {
        Ok(settings) => {
            telemetry::init(&settings.log.level, settings.log.format);
            Ok(settings)
        }
        Err(errors) => {
            eprint!("{}: {errors}", path.display());
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let mut client = store::connect(settings)
        .await
        .with_context(|| format!("connecting to {}", settings.postgres_display_url()))?;
    let report = store::migrate(&mut client).await?;
    let sync = store::sync_sites(&mut client, &settings.sites).await?;
    println!(
        "migrations applied: {}; partitions created: {}; sites added {}, changed {}, removed {}",
        if report.applied.is_empty() {
            "none (up to date)".to_owned()
        } else {
            report.applied.join(", ")
        },
        report.partitions_created,
        sync.added,
        sync.changed,
        sync.removed
    );
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
