//! The `sitewatch` command: parse arguments, load the config, call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sitewatch::checker::HttpChecker;
use sitewatch::config::{self, CheckerSettings, Settings};
use sitewatch::daemon::{self, Role};
use sitewatch::model::{CheckRequest, Origin, Outcome, SCHEMA_VERSION};
use sitewatch::{shutdown, store, telemetry};
use tokio_util::sync::CancellationToken;

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

/// `--config FILE`, shared by the commands that read the config.
#[derive(clap::Args, Clone)]
struct ConfigPath {
    /// The main config file.
    #[arg(
        long = "config",
        env = "SITEWATCH_CONFIG",
        default_value = "/etc/sitewatch/sitewatch.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration and report every problem in it.
    Validate {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Run the daemon: all stages, or those given with --role.
    Run {
        #[command(flatten)]
        config: ConfigPath,
        /// Run only this stage (repeatable): scheduler, checker, persister.
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    /// Check one URL now and print the outcome (no Kafka, no Postgres).
    /// Exit status: 0 up, 1 down.
    Check {
        url: String,
        /// Regex the body must match.
        #[arg(long)]
        regex: Option<String>,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Healthy status codes, e.g. "200-399" or "200,301-302".
        #[arg(long, default_value = "200-399")]
        expect_status: String,
        /// Body bytes read (and matched) at most; default as checker.max_body_bytes.
        #[arg(long)]
        max_body_bytes: Option<u64>,
    },
    /// Dead letters: list them, or replay them to their source topic once
    /// the cause is fixed.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Apply database migrations and sync the `sites` table with the config.
    Migrate {
        #[command(flatten)]
        config: ConfigPath,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Print every dead letter: when, from where, by which stage, why.
    List {
        #[command(flatten)]
        config: ConfigPath,
        /// One JSON object per line instead of a table.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate {
            config: ConfigPath { path: config },
        } => match config::load(&config) {
            Ok(settings) => {
                println!("{}: OK\n{}", config.display(), settings.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{}: {errors}", config.display());
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
        Command::Check {
            url,
            regex,
            timeout,
            method,
            expect_status,
            max_body_bytes,
        } => runtime().block_on(check(CheckArgs {
            url,
            regex,
            timeout,
            method,
            expect_status,
            max_body_bytes,
        })),
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
            report(runtime().block_on(dlq(&settings, action)))
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

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = config::parse_duration(text)
        .map_err(|e| format!("not an RFC 3339 time nor a duration: {e}"))?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago).map_err(|e| e.to_string())?)
}

async fn dlq(settings: &Settings, action: DlqAction) -> anyhow::Result<()> {
    let topic = &settings.kafka.topics.dlq;
    let letters = sitewatch::bus::read_dead_letters(settings, topic, Duration::from_secs(30))
        .await
        .with_context(|| format!("reading {topic} from {}", settings.kafka.brokers))?;
    match action {
        DlqAction::List { json, .. } => {
            for l in &letters {
                if json {
                    println!("{}", serde_json::to_string(l)?);
                } else {
                    println!(
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
            }
            eprintln!("{} dead letter(s) on {topic}", letters.len());
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
            let publisher = sitewatch::bus::Publisher::new(settings)?;
            for l in &chosen {
                println!(
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
            println!(
                "{} {} of {} dead letter(s)",
                if dry_run { "would replay" } else { "replayed" },
                chosen.len(),
                letters.len()
            );
        }
    }
    Ok(())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
}

struct CheckArgs {
    url: String,
    regex: Option<String>,
    timeout: Duration,
    method: String,
    expect_status: String,
    max_body_bytes: Option<u64>,
}

/// `sitewatch check`: the same check the daemon runs, printed.
async fn check(a: CheckArgs) -> ExitCode {
    let url = match config::normalize_url(&a.url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut checker_settings = CheckerSettings::default();
    if let Some(n) = a.max_body_bytes {
        checker_settings.max_body_bytes = n;
    }
    let http = match HttpChecker::new(&checker_settings, &daemon::instance_name()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = chrono::Utc::now();
    let req = CheckRequest {
        v: SCHEMA_VERSION,
        check_id: uuid::Uuid::new_v4(),
        site: url.host_str().unwrap_or("site").to_owned(),
        origin: Origin::OnDemand,
        scheduled_at: now,
        deadline: now + chrono::Duration::from_std(a.timeout).unwrap_or_default(),
        url: url.to_string(),
        method: a.method,
        headers: Default::default(),
        timeout_ms: a.timeout.as_millis() as u64,
        regex: a.regex,
        expect_status: a.expect_status,
        reuse_connection: false,
        public_only: false,
    };
    let out = http.check(&req).await;
    println!("url:           {}", out.url);
    println!("outcome:       {}", out.outcome.as_str());
    if let Some(code) = out.status_code {
        println!("status:        {code}");
    }
    if let Some(ms) = out.response_time_ms {
        println!("response time: {ms:.1} ms");
    }
    if let Some(n) = out.body_bytes {
        println!("body bytes:    {n}");
    }
    match out.regex_matched {
        Some(m) => println!(
            "regex:         {}",
            if m { "matched" } else { "not matched" }
        ),
        None if req.regex.is_some() => println!("regex:         not applied (no body)"),
        None => {}
    }
    if let Some(kind) = out.error_kind {
        println!(
            "error:         {kind}: {}",
            out.error_message.as_deref().unwrap_or("")
        );
    }
    match out.outcome {
        Outcome::Up | Outcome::Degraded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
