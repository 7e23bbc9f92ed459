//! The `sitewatch` command line: its arguments (clap) and one module per
//! command. `main` only parses and hands over to [`main`]; every command
//! returns its exit status: 0 success, 1 failure (for `check`: down), 2
//! usage (clap), 78 configuration ([`EXIT_CONFIG`]), 141 when its reader
//! closed the pipe (`| head`).

/// `println!` for the commands' output: a reader that went away
/// (`sitewatch validate | head`) ends the command quietly with status 141,
/// as it ends `cat`, instead of a panic.
macro_rules! say {
    ($($t:tt)*) => { $crate::cli::write_to(false, format_args!("{}\n", format_args!($($t)*))) };
}
/// `print!`, likewise.
macro_rules! say_raw {
    ($($t:tt)*) => { $crate::cli::write_to(false, format_args!($($t)*)) };
}
/// `eprintln!`, likewise for standard error.
macro_rules! complain {
    ($($t:tt)*) => { $crate::cli::write_to(true, format_args!("{}\n", format_args!($($t)*))) };
}

mod alert;
mod check;
mod dlq;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Settings};
use crate::daemon::{self, Role};
use crate::{shutdown, store, telemetry};

pub use alert::AlertAction;
pub use check::CheckArgs;
pub use dlq::DlqAction;

/// Exit status for an invalid configuration (sysexits' EX_CONFIG), so a
/// service manager can tell "fix the config" from "crashed".
pub const EXIT_CONFIG: u8 = 78;
/// Where every command looks for its config when not told.
pub const DEFAULT_CONFIG: &str = "/etc/sitewatch/sitewatch.toml";

#[derive(Parser)]
#[command(
    version,
    about = "Website-availability monitor: schedule, check, persist"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--config FILE`, shared by the commands that read the config.
#[derive(clap::Args, Clone)]
pub struct ConfigPath {
    /// The main config file.
    #[arg(
        long = "config",
        env = "SITEWATCH_CONFIG",
        default_value = DEFAULT_CONFIG
    )]
    pub path: PathBuf,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check a configuration and report every problem in it.
    Validate {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Run the daemon: all stages, or those given with --role.
    Run {
        #[command(flatten)]
        config: ConfigPath,
        /// Run only this stage (repeatable): scheduler, checker, persister, api.
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    /// Check one URL (or one configured site) now and print the outcome,
    /// with the timing breakdown and certificate (no Kafka, no Postgres).
    /// Exit status: 0 up or degraded, 1 down.
    Check(Box<CheckArgs>),
    /// Dead letters: list them, or replay them to their source topic once
    /// the cause is fixed.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Alert channels: send a test notification through one.
    Alert {
        #[command(subcommand)]
        action: AlertAction,
    },
    /// Apply database migrations and sync the `sites` table with the config.
    Migrate {
        #[command(flatten)]
        config: ConfigPath,
    },
}

/// Runs the command `cli` and returns its exit status.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate {
            config: ConfigPath { path: config },
        } => match config::load(&config) {
            Ok(settings) => {
                let problems =
                    crate::alerts::usable(&settings.alerts, &settings.checker.user_agent);
                if !problems.is_empty() {
                    complain!("{}: {}", config.display(), problems.join("\n  "));
                    return ExitCode::from(EXIT_CONFIG);
                }
                say!("{}: OK\n{}", config.display(), settings.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                complain!("{}: {}", config.display(), errors.to_string().trim_end());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config, roles } => {
            let settings = match load(&config.path) {
                Ok(s) => s,
                Err(code) => return code,
            };
            report(runtime().block_on(async {
                let token = CancellationToken::new();
                shutdown::cancel_on_signals(token.clone()).context("installing signal handlers")?;
                let reloads = shutdown::reload_on_sighup().context("installing SIGHUP handler")?;
                daemon::run(settings, &roles, token, reloads).await?;
                Ok(())
            }))
        }
        Command::Check(args) => {
            let rt = runtime();
            let code = rt.block_on(check::check(*args));
            // Judging still running past the check's timeout (bounded, on
            // the blocking pool) is not waited for: the verdict is out.
            rt.shutdown_background();
            code
        }
        Command::Dlq { action } => {
            let config = match &action {
                DlqAction::List { config, .. } | DlqAction::Replay { config, .. } => {
                    config.path.clone()
                }
            };
            let settings = match load(&config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            report(runtime().block_on(dlq::dlq(&settings, action)))
        }
        Command::Alert { action } => {
            let settings = match load(&action.config().path) {
                Ok(s) => s,
                Err(code) => return code,
            };
            runtime().block_on(alert::alert(&settings, action))
        }
        Command::Migrate { config } => {
            let settings = match load(&config.path) {
                Ok(s) => s,
                Err(code) => return code,
            };
            report(runtime().block_on(migrate(&settings)))
        }
    }
}

pub(crate) fn load(path: &std::path::Path) -> Result<Settings, ExitCode> {
    match config::load(path) {
        Ok(settings) => {
            // What `validate` refuses, every command refuses: a template
            // that cannot be bounded is never run by the daemon.
            let problems = crate::alerts::usable(&settings.alerts, &settings.checker.user_agent);
            if !problems.is_empty() {
                complain!("{}: {}", path.display(), problems.join("\n  "));
                return Err(ExitCode::from(EXIT_CONFIG));
            }
            telemetry::init(&settings.log.level, settings.log.format);
            Ok(settings)
        }
        Err(errors) => {
            complain!("{}: {}", path.display(), errors.to_string().trim_end());
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
    say!(
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
            complain!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to standard output (or error); a closed pipe exits 141
/// (128 + SIGPIPE, what a shell reports for a reader that left early).
pub fn write_to(stderr: bool, text: std::fmt::Arguments) {
    use std::io::Write as _;
    let written = if stderr {
        std::io::stderr().lock().write_fmt(text)
    } else {
        std::io::stdout().lock().write_fmt(text)
    };
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
    }
}
