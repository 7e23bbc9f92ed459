//! Fault injection helpers: a private broker the test may SIGKILL, and a TCP
//! proxy the test may cut.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// An Apache Kafka node of the test's own (scripts/kafka-server, data in a
/// temp dir), so killing it does not disturb other tests.
pub struct Broker {
    pub port: u16,
    /// The KRaft controller's port.
    controller: u16,
    /// The port clients are told to use (a proxy's, to cut them off).
    advertised: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    pub async fn start() -> Broker {
        let port = crate::target::closed_port().await;
        Broker::start_advertising(port, port).await
    }

    /// A broker behind a [`Proxy`] the test controls: it advertises the
    /// proxy's port, so clients reach it only through the proxy (after
    /// bootstrap too). Returns the broker and the proxy.
    pub async fn start_behind_proxy() -> (Broker, Proxy) {
        let port = crate::target::closed_port().await;
        let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
        let broker = Broker::start_advertising(port, proxy.port).await;
        (broker, proxy)
    }

    async fn start_advertising(port: u16, advertised: u16) -> Broker {
        let mut b = Broker {
            port,
            controller: crate::target::closed_port().await,
            advertised,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        b.restart().await;
        b
    }

    /// The address clients use.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Starts the node (formatting its data directory the first time) and
    /// waits until it says it has started.
    pub async fn restart(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-server");
        // Truncated at each start, so the line waited for is this start's.
        let log_path = self.dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(&script)
            .arg(self.dir.path())
            .args([self.port, self.controller, self.advertised].map(|p| p.to_string()))
            // Small heaps: several private brokers may run at once.
            .env("KAFKA_HEAP", "256m")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (run `make up`): {e}", script.display()));
        self.child = Some(child);
        let started = || async {
            std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("Kafka Server started"))
        };
        crate::support::wait_for(
            "broker started",
            std::time::Duration::from_secs(90),
            started,
        )
        .await;
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        assert!(TcpStream::connect(addr).await.is_ok(), "broker listening");
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy to `upstream`. `cut()` resets every open connection and
/// refuses new ones until `restore()`: to the client, the server is gone.
pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<(bool, CancellationToken)>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new((false, CancellationToken::new())));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (cut, token) = st.lock().unwrap().clone();
                if cut {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy { port, state }
    }

    /// A proxy to the Postgres of `url`, and `url` going through it.
    pub async fn to_postgres(url: &str) -> (Proxy, String) {
        let mut pg: url::Url = url.parse().unwrap();
        let upstream: SocketAddr =
            format!("{}:{}", pg.host_str().unwrap(), pg.port().unwrap_or(5432))
                .parse()
                .unwrap();
        let proxy = Proxy::start(upstream).await;
        pg.set_port(Some(proxy.port)).unwrap();
        (proxy, pg.to_string())
    }

    /// A test config whose Postgres is reached through a new proxy.
    pub async fn config_for(
        db: &crate::support::TestDb,
        sites: &str,
    ) -> (Proxy, crate::support::TestConfig) {
        let (proxy, via_proxy) = Proxy::to_postgres(&db.url).await;
        let cfg = crate::support::TestConfig::with_endpoints(
            &via_proxy,
            &crate::support::kafka_brokers(),
            sites,
        );
        (proxy, cfg)
    }

    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        s.1.cancel();
    }

    pub fn restore(&self) {
        *self.state.lock().unwrap() = (false, CancellationToken::new());
    }
}

/// A Postgres cluster of the test's own, so restarting it does not disturb
/// other tests. Trust auth on loopback, data in a temp dir.
pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PgServer {
    pub async fn start() -> PgServer {
        let port = crate::target::closed_port().await;
        let dir = tempfile::tempdir().unwrap();
        let root = is_root();
        if root {
            // Postgres refuses to run as root: its files belong to `postgres`.
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let data = dir.path().join("data");
        let pg = PgServer { port, dir };
        run(pg
            .as_postgres(&pg_bin().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "sitewatch",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]));
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 100\nlog_min_messages = warning\n",
            pg.dir.path().display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        pg.ctl(&["start", "-w", "-t", "60"]);
        let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("CREATE DATABASE sitewatch")
            .await
            .unwrap();
        pg
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://sitewatch@127.0.0.1:{}/{db}", self.port)
    }

    /// The test database on this server, as other tests use theirs.
    pub fn test_db(&self) -> crate::support::TestDb {
        crate::support::TestDb {
            name: "sitewatch".into(),
            url: self.url("sitewatch"),
        }
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint,
    /// every connection dropped), so it recovers from its WAL on start.
    pub fn crash(&self) {
        self.ctl(&["stop", "-m", "immediate", "-w"]);
    }

    pub fn start_again(&self) {
        self.ctl(&["start", "-w", "-t", "60"]);
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        run(self
            .as_postgres(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(args));
    }

    fn as_postgres(&self, bin: &std::path::Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.ctl(&["stop", "-m", "immediate", "-w"])
        }));
    }
}

fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SITEWATCH_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries (scripts/install-deps)")
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
