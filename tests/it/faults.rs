//! Fault injection helpers: a private broker the test may SIGKILL, and a TCP
//! proxy the test may cut.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A Tansu broker of the test's own (sqlite storage in a temp dir), so
/// killing it does not disturb other tests.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    pub async fn start() -> Broker {
        let port = crate::target::closed_port().await;
        let mut b = Broker {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        b.restart().await;
        b
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        let bin = std::env::var("SITEWATCH_TANSU_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap())
                    .join(".local/share/sitewatch/tansu-0.6.0/bin/tansu")
            });
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("broker.log")).unwrap();
        let child = Command::new(&bin)
            .args(["broker", "--cluster-id", "sitewatch-test"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (run `make up`): {e}", bin.display()));
        self.child = Some(child);
        let addr: SocketAddr = self.address().parse().unwrap();
        crate::support::wait_for(
            "broker listening",
            std::time::Duration::from_secs(30),
            || async { TcpStream::connect(addr).await.is_ok() },
        )
        .await;
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
