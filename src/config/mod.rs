//! Configuration: one TOML file (daemon settings and `[[sites]]`), extra site
//! files matched by globs, and `SITEWATCH__SECTION__KEY` environment
//! overrides. Everything is validated once, here, into typed values; a bad
//! config yields every problem found, each naming file, site and field.

mod alerts;
mod channels;
mod connections;
mod duration;
mod kafka;
mod listeners;
pub mod maintenance;
mod normalize;
mod on_demand;
mod pg_url;
mod problem;
mod request;
mod secret;
mod settings;
mod site;
mod status_page;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use alerts::{unknown_channel, AlertFormat, AlertSettings, Channel, Email, SmtpTls, Target};
pub use connections::ConnectionLimits;
pub use duration::{parse as parse_duration, show as show_duration};
pub use kafka::{Compression, KafkaSasl, KafkaSettings, KafkaTls, TopicNames};
pub use listeners::{AdminSettings, ApiSettings};
pub use normalize::normalize_url;
pub use on_demand::{
    parse_on_demand, refuse_by_policy, FieldError, PortRange, MAX_ON_DEMAND_TIMEOUT,
};
pub use pg_url::{split as split_pg_url, PgTls, SslMode};
pub use problem::{ConfigErrors, Problem, SiteRef};
pub use secret::Secret;
pub use settings::{
    parse_dns_server, CheckerSettings, Coordination, IncidentSettings, LogFormat, LogSettings,
    PersisterSettings, PostgresSettings, RetentionSettings, SchedulerSettings, SiteDefaults,
};
pub use site::{Site, StatusSet};
pub use status_page::{Group as StatusGroup, Listed, StatusPage};

/// The configured sites as the stages share them: one allocation per site,
/// swapped whole on a reload (through a `watch` channel).
pub type SiteList = Arc<Vec<Arc<Site>>>;

use settings::RawSettings;

/// The shortest API token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The prefix of environment overrides: `SITEWATCH__POSTGRES__URL` sets
/// `postgres.url`.
pub const ENV_PREFIX: &str = "SITEWATCH";

/// A loaded, valid configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The main file, as given.
    pub file: PathBuf,
    /// Every file that contributed sites (main file first).
    pub site_files: Vec<PathBuf>,
    pub postgres: PostgresSettings,
    /// `postgres.password` or the contents of `postgres.password_file`.
    pub postgres_password: Option<Secret>,
    pub kafka: KafkaSettings,
    /// Resolved SASL password and TLS key passphrase.
    pub kafka_sasl_password: Option<Secret>,
    pub kafka_tls_key_password: Option<Secret>,
    pub scheduler: SchedulerSettings,
    pub checker: CheckerSettings,
    pub persister: PersisterSettings,
    pub retention: RetentionSettings,
    pub incidents: IncidentSettings,
    pub alerts: AlertSettings,
    pub log: LogSettings,
    pub site_defaults: SiteDefaults,
    pub admin: AdminSettings,
    pub api: ApiSettings,
    /// `api.tokens` and the lines of `api.tokens_file`.
    pub api_tokens: Vec<Secret>,
    /// `[status_page]`, its listed sites checked against `sites`.
    pub status_page: StatusPage,
    pub sites: Vec<Site>,
}

/// Loads `path` with overrides from the process environment.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    load_with_env(path, std::env::vars().collect())
}

/// Loads `path` with overrides from `env` (tests pass their own map instead
/// of mutating the process environment).
///
/// Why a thread: parsing 100,000 sites allocates about 300 MB of TOML values
/// that die at once, interleaved with the sites that live on. In one
/// allocator arena the survivors pin most of those pages and the process
/// keeps the peak resident (390 MB steady at 100k sites). Parsed on a
/// scratch thread (its own arena), then copied out here, the sites land
/// densely in this thread's arena and the scratch arena is freed whole.
pub fn load_with_env(path: &Path, env: HashMap<String, String>) -> Result<Settings, ConfigErrors> {
    let fallback = env.clone();
    let parsed = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("config-parse".into())
            .spawn_scoped(scope, move || parse(path, env))
            .map(|t| t.join())
    });
    let result = match parsed {
        Ok(Ok(result)) => result.map(Settings::compacted),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // No thread to be had: parse here, at the cost of the memory.
        Err(_) => parse(path, fallback).map(Settings::compacted),
    };
    release_free_memory();
    result
}

/// Hands the scratch arena's free pages back to the system (glibc keeps a
/// dead thread's arena for reuse otherwise).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Settings {
    /// A copy whose sites are fresh allocations of the calling thread.
    fn compacted(mut self) -> Settings {
        // Sites of one file are neighbours: one new path per file.
        let mut last: Option<(Arc<Path>, Arc<Path>)> = None;
        self.sites = self
            .sites
            .iter()
            .map(|s| {
                let mut copy = s.deep_clone();
                copy.source = match &last {
                    Some((old, new)) if Arc::ptr_eq(old, &s.source) => Arc::clone(new),
                    _ => {
                        let new: Arc<Path> = Arc::from(&*s.source);
                        last = Some((Arc::clone(&s.source), Arc::clone(&new)));
                        new
                    }
                };
                copy
            })
            .collect();
        self
    }
}

fn parse(path: &Path, env: HashMap<String, String>) -> Result<Settings, ConfigErrors> {
    let mut problems = Vec::new();

    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![Problem::file(path, format!("cannot read: {e}"))]))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigErrors(vec![Problem::file(path, format!("not valid TOML: {e}"))]))?;
    let main_sites = table.remove("sites");

    let vars = env.clone();
    let (raw, usable) = match daemon_settings(&table, env.clone()) {
        Ok(raw) => {
            problems.extend(raw.validate(path));
            (Some(raw), None)
        }
        Err(whole) => {
            let (mut found, usable) = section_problems(&table, env);
            if found.is_empty() {
                found.push(whole);
            }
            problems.extend(found.into_iter().map(|p| p.with_file(path)));
            (None, usable)
        }
    };
    // Sites are still checked when the daemon settings are broken, against
    // the sections that are not (a bad `[postgres]` key once made every
    // site fail the default `min_interval` the file had lowered), so the
    // operator sees every problem at once, each as it is.
    let fallback = usable.unwrap_or_else(RawSettings::default_for_sites);
    let base = raw.as_ref().unwrap_or(&fallback);

    let mut site_tables: Vec<(Arc<Path>, usize, toml::Table)> = Vec::new();
    let mut site_files = vec![path.to_path_buf()];
    collect_sites(path, main_sites, &mut site_tables, &mut problems);
    let dir = path.parent().unwrap_or(Path::new("."));
    for pattern in &base.sites_files {
        let full = dir.join(pattern);
        let matches = match glob::glob(&full.to_string_lossy()) {
            Ok(m) => m,
            Err(e) => {
                problems.push(Problem::field(
                    path,
                    "sites_files",
                    format!("bad glob {pattern:?}: {e}"),
                ));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
        files.sort();
        for file in files {
            match read_site_file(&file) {
                Ok(sites) => collect_sites(&file, sites, &mut site_tables, &mut problems),
                Err(p) => problems.push(p),
            }
            site_files.push(file);
        }
    }

    let mut sites: Vec<Site> = Vec::new();
    for (file, index, t) in site_tables {
        match site::parse_site(
            t,
            index,
            &file,
            &base.site_defaults,
            base.scheduler.min_interval,
            site::Patterns::Shared,
        ) {
            Ok(s) => sites.push(s),
            Err(p) => problems.extend(p),
        }
    }
    problems.extend(duplicates(&sites));

    let Some(raw) = raw else {
        return Err(ConfigErrors(problems));
    };
    let mut secret = |inline: Option<&Secret>, file: Option<&Path>, ik: &str, fk: &str| {
        secret::resolve(inline, file, ik, fk).unwrap_or_else(|(field, msg)| {
            problems.push(Problem::field(path, field, msg));
            None
        })
    };
    let postgres_password = secret(
        raw.postgres.password.as_ref(),
        raw.postgres.password_file.as_deref(),
        "postgres.password",
        "postgres.password_file",
    );
    let kafka_sasl_password = raw.kafka.sasl.as_ref().and_then(|s| {
        secret(
            s.password.as_ref(),
            s.password_file.as_deref(),
            "kafka.sasl.password",
            "kafka.sasl.password_file",
        )
    });
    let kafka_tls_key_password = secret(
        raw.kafka.tls.key_password.as_ref(),
        raw.kafka.tls.key_password_file.as_deref(),
        "kafka.tls.key_password",
        "kafka.tls.key_password_file",
    );

    let api_tokens = listeners::api_tokens(&raw.api, path, &mut problems);
    let alerts = alerts::build(&raw.alerts, path, &vars, &mut problems);
    alerts::check_routes(&alerts, &sites, &mut problems);
    let status_page = status_page::build(&raw.status_page, path, &sites, &mut problems);

    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }
    Ok(Settings {
        file: path.to_path_buf(),
        site_files,
        postgres: raw.postgres,
        postgres_password,
        kafka: raw.kafka,
        kafka_sasl_password,
        kafka_tls_key_password,
        scheduler: raw.scheduler,
        checker: raw.checker,
        persister: raw.persister,
        retention: raw.retention,
        incidents: raw.incidents,
        alerts,
        log: raw.log,
        site_defaults: raw.site_defaults,
        admin: raw.admin,
        api: raw.api,
        api_tokens,
        status_page,
        sites,
    })
}

/// A problem from the `config` crate before we know which file to blame.
struct DaemonProblem {
    field: Option<String>,
    message: String,
}

impl DaemonProblem {
    fn with_file(self, file: &Path) -> Problem {
        match self.field {
            Some(f) => Problem::field(file, f, self.message),
            None => Problem::file(file, self.message),
        }
    }
}

/// Layers the main file's daemon settings under the environment overrides.
/// The daemon settings failed as a whole: each top-level section is read
/// alone, so that each broken one is named with its own problem (serde
/// stops at the first), and the others are read together for the sites to
/// be checked against. Returns the problems and those settings (`None` if
/// even they fail, as when an environment override is what is wrong).
fn section_problems(
    table: &toml::Table,
    env: HashMap<String, String>,
) -> (Vec<DaemonProblem>, Option<RawSettings>) {
    let mut problems = Vec::new();
    let mut good = toml::Table::new();
    for (key, value) in table {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        match daemon_settings(&alone, HashMap::new()) {
            Ok(_) => {
                good.insert(key.clone(), value.clone());
            }
            Err(p) => problems.push(p),
        }
    }
    let usable = match daemon_settings(&good, env) {
        Ok(raw) => Some(raw),
        Err(p) => {
            // Not a section's fault: the environment's.
            problems.push(p);
            None
        }
    };
    (problems, usable)
}

fn daemon_settings(
    table: &toml::Table,
    env: HashMap<String, String>,
) -> Result<RawSettings, DaemonProblem> {
    let text = toml::to_string(table).map_err(|e| DaemonProblem {
        field: None,
        message: e.to_string(),
    })?;
    let overrides = env_overrides(&env);
    let blame = |p: DaemonProblem| blame_environment(p, &overrides);
    let cfg = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                // SITEWATCH__API__TOKENS="a,b": a list; every other value
                // stays a single string.
                .list_separator(",")
                .with_list_parse_key("api.tokens")
                .source(Some(env.into_iter().collect())),
        )
        .build()
        .map_err(config_problem)
        .map_err(blame)?;
    cfg.try_deserialize::<RawSettings>()
        .map_err(config_problem)
        .map_err(blame)
}

/// The environment overrides as (variable, key path): `SITEWATCH__CHECKER__CONCURRENCY`
/// is `checker.concurrency`.
fn env_overrides(env: &HashMap<String, String>) -> Vec<(String, String)> {
    let prefix = format!("{ENV_PREFIX}__");
    env.keys()
        .filter_map(|var| {
            let path = var.strip_prefix(&prefix)?;
            Some((var.clone(), path.to_lowercase().replace("__", ".")))
        })
        .collect()
}

/// Names the environment variable a problem comes from, when it does, so
/// that the user does not search the file for a key that is not there.
fn blame_environment(mut p: DaemonProblem, overrides: &[(String, String)]) -> DaemonProblem {
    let unknown = p
        .message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let culprit = overrides.iter().find(|(_, path)| {
        let under_field = p
            .field
            .as_deref()
            .is_none_or(|f| path == f || path.starts_with(&format!("{f}.")));
        match &unknown {
            Some(name) => under_field && path.rsplit('.').next() == Some(name.as_str()),
            None => p.field.as_deref() == Some(path.as_str()),
        }
    });
    if let Some((var, path)) = culprit {
        p.field = Some(path.clone());
        p.message = format!(
            "{}; set by the environment variable {var}, not in the file",
            p.message
        );
    }
    p
}

fn config_problem(e: config::ConfigError) -> DaemonProblem {
    // The config crate words it as "<what> for key `a.b`"; lift the key out
    // so the message reads like the others.
    let text = e.to_string();
    // (A value from the environment has " in the environment" after the
    // key; `blame_environment` then names the variable.)
    if let Some((msg, rest)) = text.rsplit_once(" for key `") {
        if let Some((key, _)) = rest.split_once('`') {
            return DaemonProblem {
                field: Some(key.to_owned()),
                message: msg.to_owned(),
            };
        }
    }
    DaemonProblem {
        field: None,
        message: text,
    }
}

/// A site file holds `[[sites]]` and nothing else.
fn read_site_file(file: &Path) -> Result<Option<toml::Value>, Problem> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Problem::file(file, format!("cannot read: {e}")))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| Problem::file(file, format!("not valid TOML: {e}")))?;
    let sites = table.remove("sites");
    if let Some(key) = table.keys().next() {
        return Err(Problem::field(
            file,
            key.clone(),
            "unknown key; a site file holds only [[sites]] tables",
        ));
    }
    Ok(sites)
}

fn collect_sites(
    file: &Path,
    sites: Option<toml::Value>,
    out: &mut Vec<(Arc<Path>, usize, toml::Table)>,
    problems: &mut Vec<Problem>,
) {
    let Some(sites) = sites else { return };
    let source: Arc<Path> = Arc::from(file);
    let toml::Value::Array(items) = sites else {
        problems.push(Problem::field(
            file,
            "sites",
            "must be an array of tables ([[sites]])",
        ));
        return;
    };
    for (i, item) in items.into_iter().enumerate() {
        match item {
            toml::Value::Table(t) => out.push((Arc::clone(&source), i, t)),
            other => problems.push(Problem::site(
                file,
                &SiteRef::Index(i),
                None,
                format!("expected a table, found {}", other.type_str()),
            )),
        }
    }
}

/// Names must be unique, and no two sites may check the same target.
fn duplicates(sites: &[Site]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut by_name: HashMap<&str, &Site> = HashMap::new();
    let mut by_url: HashMap<&str, &Site> = HashMap::new();
    for s in sites {
        let here = SiteRef::Named(s.name.clone());
        if let Some(first) = by_name.insert(&s.name, s) {
            out.push(Problem::site(
                &s.source,
                &here,
                Some("name"),
                format!("duplicate name; also defined in {}", first.source.display()),
            ));
            continue;
        }
        if let Some(first) = by_url.insert(s.url.as_str(), s) {
            out.push(Problem::site(
                &s.source,
                &here,
                Some("url"),
                format!(
                    "{} is the same target as site \"{}\" ({}); URLs are compared after normalisation",
                    crate::model::redacted_url(s.url.as_str()),
                    first.name,
                    first.source.display()
                ),
            ));
        }
    }
    out
}

impl RawSettings {
    fn default_for_sites() -> Self {
        toml::from_str("").expect("empty settings deserialize to defaults")
    }
}

impl Settings {
    /// A few lines for `sitewatch validate` and the start-up log. Never
    /// includes secrets.
    pub fn summary(&self) -> String {
        let enabled = self.sites.iter().filter(|s| s.enabled).count();
        let (min, max) = self
            .sites
            .iter()
            .map(|s| s.interval)
            .fold((None, None), |(lo, hi), i| {
                (
                    Some(lo.map_or(i, |l: std::time::Duration| l.min(i))),
                    Some(hi.map_or(i, |h: std::time::Duration| h.max(i))),
                )
            });
        let intervals = match (min, max) {
            (Some(a), Some(b)) if a == b => format!(", every {}", show_duration(a)),
            (Some(a), Some(b)) => {
                format!(", intervals {} to {}", show_duration(a), show_duration(b))
            }
            _ => String::new(),
        };
        let channels: Vec<String> = (self.alerts.channels.iter())
            .map(|c| format!("{} ({})", c.name, c.kind()))
            .collect();
        format!(
            "{} sites ({enabled} enabled) from {} file(s){intervals}\n\
             postgres: {}\nkafka: {} (topics {})\nalert channels: {}",
            self.sites.len(),
            self.site_files.len(),
            self.postgres_display_url(),
            self.kafka.brokers,
            self.kafka.topics.all().join(", "),
            if channels.is_empty() {
                "none (no alerts)".to_owned()
            } else {
                channels.join(", ")
            },
        )
    }

    /// The Postgres URL with any password removed, for logs: the one in
    /// the authority (`user:pw@`) and the `password` / `sslpassword` query
    /// parameters libpq also accepts.
    pub fn postgres_display_url(&self) -> String {
        match url::Url::parse(&self.postgres.url) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("REDACTED"));
                }
                let secret = |k: &str| {
                    k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword")
                };
                if u.query_pairs().any(|(k, _)| secret(&k)) {
                    let pairs: Vec<(String, String)> = u
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if secret(&k) {
                                "REDACTED".into()
                            } else {
                                v.into_owned()
                            };
                            (k.into_owned(), v)
                        })
                        .collect();
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
                u.to_string()
            }
            // key=value form: show only the non-secret keys.
            Err(_) => self
                .postgres
                .url
                .split_whitespace()
                .filter(|kv| !kv.starts_with("password="))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

#[cfg(test)]
mod tests;
