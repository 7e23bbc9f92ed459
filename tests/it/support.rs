//! Shared helpers: a fresh, migrated database per test (random name), random
//! topic and group names, and settings that point at the dev stack started by
//! `make up` (`scripts/up`). Override the endpoints with
//! `SITEWATCH_TEST_PG_URL` and `SITEWATCH_TEST_KAFKA`.

use std::collections::HashMap;
use std::path::PathBuf;

use sitewatch::config::{self, Settings};
use tempfile::TempDir;
use tokio_postgres::NoTls;

pub fn pg_url() -> String {
    std::env::var("SITEWATCH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://sitewatch@127.0.0.1:55432/sitewatch".to_owned())
}

pub fn kafka_brokers() -> String {
    std::env::var("SITEWATCH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

/// A short random suffix for database, topic and group names.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A database created for one test. It is left behind on purpose, so a failed
/// test's data can be inspected; `make test` drops the last run's
/// (`scripts/test-db-clean`) before it starts.
pub struct TestDb {
    #[allow(dead_code)] // handy when a failing test is debugged
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin_url = pg_url();
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach test Postgres at {admin_url} (run `make up`): {e}")
            });
        tokio::spawn(conn);
        let name = unique("sw_test");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = with_dbname(&admin_url, &name);
        TestDb { name, url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(conn);
        client
    }
}

fn with_dbname(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("test Postgres URL must be a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A config directory for one test: the main file names the test database,
/// the dev broker, a random consumer-group prefix and random topic names;
/// the sites are appended verbatim.
pub struct TestConfig {
    /// Held so the directory lives as long as the test.
    _dir: TempDir,
    pub path: PathBuf,
    pub topics: Topics,
    /// The admin listener's address (a free loopback port).
    pub admin: std::net::SocketAddr,
    daemon: String,
}

#[derive(Clone, Debug)]
pub struct Topics {
    pub created: String,
    pub succeeded: String,
    pub failed: String,
    pub dlq: String,
}

impl Topics {
    pub fn all(&self) -> [&str; 4] {
        [&self.created, &self.succeeded, &self.failed, &self.dlq]
    }
}

impl TestConfig {
    pub fn new(db: &TestDb, sites: &str) -> TestConfig {
        TestConfig::with_endpoints(&db.url, &kafka_brokers(), sites)
    }

    /// A config pointing at the given Postgres URL and brokers (a test's own
    /// broker, or a proxy the test controls).
    pub fn with_endpoints(pg_url: &str, brokers: &str, sites: &str) -> TestConfig {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = unique("t");
        let topics = Topics {
            created: format!("{t}_created"),
            succeeded: format!("{t}_succeeded"),
            failed: format!("{t}_failed"),
            dlq: format!("{t}_dlq"),
        };
        let admin = free_addr();
        let daemon = format!(
            r#"
[postgres]
url = "{pg}"
pool_size = 4

[kafka]
brokers = "{brokers}"
group_prefix = "{group}"
partitions = 3
session_timeout = "6s"

[kafka.topics]
created = "{c}"
succeeded = "{s}"
failed = "{f}"
dlq = "{d}"

[scheduler]
min_interval = "100ms"
shards = 8
failover_timeout = "6s"

[admin]
listen = "{admin}"

[log]
level = "warn"
"#,
            pg = pg_url,
            brokers = brokers,
            group = unique("g"),
            c = topics.created,
            s = topics.succeeded,
            f = topics.failed,
            d = topics.dlq,
        );
        let path = dir.path().join("sitewatch.toml");
        let cfg = TestConfig {
            _dir: dir,
            path,
            topics,
            admin,
            daemon,
        };
        cfg.set_sites(sites);
        cfg
    }

    /// Replaces the sites, keeping the daemon settings.
    pub fn set_sites(&self, sites: &str) {
        std::fs::write(&self.path, format!("{}\n{sites}\n", self.daemon)).expect("write config");
    }

    pub fn load(&self) -> Settings {
        config::load_with_env(&self.path, HashMap::new())
            .unwrap_or_else(|e| panic!("test config invalid: {e}"))
    }

    /// The settings (sites taken out) and the sites, as the daemon shares
    /// them with its stages.
    pub fn load_shared(&self) -> (std::sync::Arc<Settings>, sitewatch::config::SiteList) {
        let mut settings = self.load();
        let sites: sitewatch::config::SiteList = std::sync::Arc::new(
            std::mem::take(&mut settings.sites)
                .into_iter()
                .map(std::sync::Arc::new)
                .collect(),
        );
        (std::sync::Arc::new(settings), sites)
    }
}

/// A scheduled slot of `site` at `slot`, as `skipped` and as `up` (200):
/// outcomes built by hand for tests that publish or insert them directly.
pub fn slot_outcomes(
    site: &str,
    slot: chrono::DateTime<chrono::Utc>,
    url: &str,
) -> (
    sitewatch::model::CheckOutcome,
    sitewatch::model::CheckOutcome,
) {
    use sitewatch::model::{CheckOutcome, ErrorKind, Outcome};
    let req = request(site, slot, url);
    let skipped = CheckOutcome::skipped(&req, ErrorKind::MissedSlot, "placeholder".into(), "t");
    let mut up = skipped.clone();
    up.outcome = Outcome::Up;
    up.status_code = Some(200);
    up.error_kind = None;
    up.error_message = None;
    (skipped, up)
}

/// A scheduled request of `site` for `slot`, 1 s timeout, GET `url`.
pub fn request(
    site: &str,
    slot: chrono::DateTime<chrono::Utc>,
    url: &str,
) -> sitewatch::model::CheckRequest {
    use sitewatch::model::{self, CheckRequest, Origin};
    CheckRequest {
        v: model::SCHEMA_VERSION,
        check_id: model::CheckIds::TIME_LEADING.scheduled(site, slot),
        site: site.into(),
        origin: Origin::Scheduled,
        scheduled_at: slot,
        deadline: slot + chrono::Duration::seconds(60),
        url: url.into(),
        method: "GET".into(),
        headers: Default::default(),
        timeout_ms: 1000,
        regex: None,
        expect_status: "200-399".into(),
        reuse_connection: false,
        public_only: false,
        options: None,
        requested_by: None,
        late: false,
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A reload channel that never fires, for daemons run in-process.
pub fn no_reloads() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // Kept open so the daemon's reload branch just waits.
    std::mem::forget(tx);
    rx
}

/// Polls `cond` every 100 ms until it holds; panics after `limit` naming
/// what was awaited.
pub async fn wait_for<F, Fut>(what: &str, limit: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Where a test's daemon processes write their logs (kept after the test).
pub fn log_path(db: &TestDb) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.log", db.name))
}

/// The single integer a query returns (-1 when it fails, e.g. while a
/// table is being created).
pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

/// Seconds from `since` to the first real (not skipped) row, by `column`
/// (`scheduled_at` or `persisted_at`), of the site that waited longest: a
/// failover or recovery time.
pub async fn longest_wait(
    client: &tokio_postgres::Client,
    column: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> f64 {
    client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM max(first) - $1)::float8 FROM (
                     SELECT site, min({column}) AS first FROM check_results
                     WHERE outcome <> 'skipped' AND scheduled_at > $1 GROUP BY site) f"
            ),
            &[&since],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits (up to a minute) until the daemon's admin listener at `admin`
/// says it is ready.
pub async fn wait_ready(admin: std::net::SocketAddr) {
    let http = reqwest::Client::new();
    wait_for(
        "the daemon ready",
        std::time::Duration::from_secs(60),
        || async {
            http.get(format!("http://{admin}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

/// Reads an HTTP request's head (through its blank line) from `s`, with
/// whatever of the body came with it; `None` if the peer left first.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf)
}
