//! The `sitewatch` command: parse arguments, load the config, call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sitewatch::checker::HttpChecker;
use sitewatch::config::{self, Settings};
use sitewatch::daemon::{self, Role};
use sitewatch::model::{CheckRequest, Origin, Outcome};
use sitewatch::{shutdown, store, telemetry};
use tokio_util::sync::CancellationToken;

/// Exit status for an invalid configuration (sysexits' EX_CONFIG), so a
/// service manager can tell "fix the config" from "crashed".
const EXIT_CONFIG: u8 = 78;
/// Where every command looks for its config when not told.
const DEFAULT_CONFIG: &str = "/etc/sitewatch/sitewatch.toml";

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
        default_value = DEFAULT_CONFIG
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
        Command::Check(args) => runtime().block_on(check(*args)),
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
        DlqAction::List { json: true, .. } => {
            // One JSON array, `[]` when there are none.
            println!("{}", serde_json::to_string(&letters)?);
        }
        DlqAction::List { .. } => {
            for l in &letters {
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

#[derive(clap::Args)]
struct CheckArgs {
    /// The URL to check (or use --site).
    #[arg(required_unless_present = "site")]
    url: Option<String>,
    /// Check this site of the config file instead, with all its assertions.
    #[arg(long, conflicts_with = "url")]
    site: Option<String>,
    /// The config file for --site (default /etc/sitewatch/sitewatch.toml
    /// then; also for checker settings such as ca_files and max_body_bytes).
    #[arg(long = "config", env = "SITEWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Regex the body must match.
    #[arg(long)]
    regex: Option<String>,
    /// Regex the body must not match.
    #[arg(long)]
    forbidden_regex: Option<String>,
    #[arg(long, default_value = "10s")]
    timeout: String,
    #[arg(long)]
    method: Option<String>,
    /// Request header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// Healthy status codes, e.g. "200-399" or "200,301-302".
    #[arg(long)]
    expect_status: Option<String>,
    /// Response header assertion: `name` (present), `name=REGEX` (present
    /// and matching) or `!name` (absent). Repeatable.
    #[arg(long = "expect-header")]
    expect_headers: Vec<String>,
    /// A correct response slower than this is degraded, e.g. "500ms".
    #[arg(long)]
    degraded_after: Option<String>,
    #[arg(long)]
    body_min_bytes: Option<u64>,
    #[arg(long)]
    body_max_bytes: Option<u64>,
    /// Fail when the certificate has fewer days left.
    #[arg(long)]
    min_cert_days: Option<u32>,
    /// Judge a redirect as the response instead of following it.
    #[arg(long)]
    no_follow: bool,
    #[arg(long)]
    max_redirects: Option<u32>,
    /// Accept any certificate (its expiry is still shown).
    #[arg(long)]
    insecure: bool,
    /// any, prefer_ipv4, prefer_ipv6, ipv4 or ipv6.
    #[arg(long)]
    ip_family: Option<String>,
    /// Body bytes read (and matched) at most; default as checker.max_body_bytes.
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Print the outcome as JSON (the message the checker publishes).
    #[arg(long)]
    json: bool,
}

impl CheckArgs {
    /// The check as an on-demand request body, validated by the same rules
    /// as the API and the config file.
    fn as_request(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "url": self.url, "timeout": self.timeout });
        let mut set = |key: &str, value: serde_json::Value| {
            if !value.is_null() {
                body[key] = value;
            }
        };
        set("regex", self.regex.clone().into());
        set("forbidden_regex", self.forbidden_regex.clone().into());
        set("method", self.method.clone().into());
        set("body", self.body.clone().into());
        set("expect_status", self.expect_status.clone().into());
        set("degraded_after", self.degraded_after.clone().into());
        set("body_min_bytes", self.body_min_bytes.into());
        set("body_max_bytes", self.body_max_bytes.into());
        set("min_cert_days", self.min_cert_days.into());
        set("max_redirects", self.max_redirects.into());
        set("ip_family", self.ip_family.clone().into());
        if self.no_follow {
            set("follow_redirects", false.into());
        }
        if self.insecure {
            set("verify_tls", false.into());
        }
        if !self.headers.is_empty() {
            let mut map = serde_json::Map::new();
            for h in &self.headers {
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                map.insert(k.trim().to_owned(), v.trim().into());
            }
            set("headers", map.into());
        }
        if !self.expect_headers.is_empty() {
            let rules: Vec<serde_json::Value> = self
                .expect_headers
                .iter()
                .map(|h| match (h.strip_prefix('!'), h.split_once('=')) {
                    (Some(name), _) => serde_json::json!({"name": name, "absent": true}),
                    (None, Some((name, re))) => serde_json::json!({"name": name, "matches": re}),
                    (None, None) => serde_json::json!({"name": h}),
                })
                .collect();
            set("expect_headers", rules.into());
        }
        body
    }
}

/// `sitewatch check`: the same check the daemon runs, printed.
async fn check(a: CheckArgs) -> ExitCode {
    // A site comes from a config file: the one given, or the default the
    // other commands read. A bare URL needs none.
    let config = a
        .config
        .clone()
        .or_else(|| a.site.as_ref().map(|_| PathBuf::from(DEFAULT_CONFIG)));
    let settings = match &config {
        Some(path) => match load(path) {
            Ok(s) => Some(s),
            Err(code) => return code,
        },
        None => None,
    };
    let mut checker_settings = settings
        .as_ref()
        .map(|s| s.checker.clone())
        .unwrap_or_default();
    if let Some(n) = a.max_body_bytes {
        checker_settings.max_body_bytes = n;
    }
    let site = match (&a.site, &settings) {
        (Some(name), Some(s)) => match s.sites.iter().find(|site| &site.name == name) {
            Some(site) => site.clone(),
            None => {
                eprintln!("error: no site named {name:?} in the config");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (Some(_), None) => {
            eprintln!("error: --site needs --config (or SITEWATCH_CONFIG)");
            return ExitCode::from(EXIT_CONFIG);
        }
        (None, _) => {
            let defaults = settings
                .as_ref()
                .map(|s| s.site_defaults.clone())
                .unwrap_or_default();
            match config::parse_on_demand(&a.as_request(), &defaults) {
                Ok(site) => site,
                Err(errors) => {
                    for e in errors {
                        eprintln!("error: {}: {}", e.field, e.message);
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    let http = match HttpChecker::new(&checker_settings, &daemon::instance_name()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut req = CheckRequest::for_slot(&site, chrono::Utc::now());
    req.origin = Origin::OnDemand;
    req.check_id = uuid::Uuid::new_v4();
    let out = http.check(&req).await;
    if a.json {
        println!(
            "{}",
            String::from_utf8_lossy(&sitewatch::model::encode(&out))
        );
    } else {
        print!("{}", sitewatch::checker::report(&out));
    }
    match out.outcome {
        Outcome::Up | Outcome::Degraded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
