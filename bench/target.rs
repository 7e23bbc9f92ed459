//! The bench target: many virtual sites (`/site/N`) on several loopback
//! addresses (so fresh connections do not exhaust one address's ports),
//! over plain HTTP and, with certificates given, over HTTPS with an ECDSA
//! P-256 leaf on `port + 1` and an RSA-2048 leaf on `port + 2`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the sites are, and how their URLs are written.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// Loopback addresses 127.0.0.2 .. 127.0.0.(1+addrs).
    #[arg(long, default_value_t = 8)]
    pub addrs: u8,
    /// Plain HTTP; HTTPS (ECDSA) on port + 1, HTTPS (RSA) on port + 2.
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// Host names instead of IP literals: site i is on `s{i % names}.DOMAIN`,
    /// which must resolve to 127.0.0.(2 + (i % names) % addrs) (the bench
    /// script's DNS server serves exactly that).
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub names: usize,
    /// Half the sites over HTTPS (a quarter ECDSA, a quarter RSA).
    #[arg(long)]
    pub https: bool,
}

impl Target {
    pub fn url(&self, site: usize) -> String {
        let (scheme, port) = match (self.https, site % 4) {
            (true, 1) => ("https", self.port + 1),
            (true, 3) => ("https", self.port + 2),
            _ => ("http", self.port),
        };
        match &self.domain {
            Some(domain) => {
                let name = site % self.names;
                format!("{scheme}://s{name}.{domain}:{port}/site/{site}")
            }
            None => {
                let a = 2 + (site % self.addrs as usize);
                format!("{scheme}://127.0.0.{a}:{port}/site/{site}")
            }
        }
    }
}

/// Certificates for the HTTPS listeners (PEM: leaf first, then the key).
#[derive(clap::Args, Clone)]
pub struct Certs {
    #[arg(long, requires = "ecdsa_key")]
    pub ecdsa_cert: Option<PathBuf>,
    #[arg(long)]
    pub ecdsa_key: Option<PathBuf>,
    #[arg(long, requires = "rsa_key")]
    pub rsa_cert: Option<PathBuf>,
    #[arg(long)]
    pub rsa_key: Option<PathBuf>,
}

#[derive(Clone)]
struct Page {
    latency: Duration,
    status: axum::http::StatusCode,
    body: Arc<String>,
}

/// Serves until killed. The body is `body` bytes ending in "healthy".
pub async fn serve(
    t: Target,
    certs: Certs,
    latency: Duration,
    status: u16,
    body: usize,
) -> anyhow::Result<()> {
    let mut text = "x".repeat(body.saturating_sub(8));
    text.push_str(" healthy");
    let page = Page {
        latency,
        status: axum::http::StatusCode::from_u16(status)?,
        body: Arc::new(text),
    };
    let app = Router::new()
        .route(
            "/site/{n}",
            get(|State(p): State<Page>, Path(_n): Path<u64>| async move {
                if !p.latency.is_zero() {
                    tokio::time::sleep(p.latency).await;
                }
                (p.status, p.body.as_str().to_owned())
            }),
        )
        .with_state(page);
    let tls: Vec<(u16, Arc<rustls::ServerConfig>)> = [
        (1, certs.ecdsa_cert.zip(certs.ecdsa_key)),
        (2, certs.rsa_cert.zip(certs.rsa_key)),
    ]
    .into_iter()
    .filter_map(|(offset, files)| Some((t.port + offset, files?)))
    .map(|(port, (cert, key))| Ok((port, server_config(&cert, &key)?)))
    .collect::<anyhow::Result<_>>()?;
    let mut servers = Vec::new();
    for a in 0..t.addrs {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + a));
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, t.port)).await?;
        let plain = app.clone();
        servers.push(tokio::spawn(async move {
            axum::serve(listener, plain).await?;
            anyhow::Ok(())
        }));
        for (port, config) in &tls {
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, *port)).await?;
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            servers.push(tokio::spawn(serve_tls(listener, acceptor, app.clone())));
        }
    }
    eprintln!(
        "target: {} addresses 127.0.0.2.. port {} (HTTPS on {} listeners), latency {latency:?}, \
         status {status}, body {body} B",
        t.addrs,
        t.port,
        tls.len()
    );
    for s in servers {
        s.await??;
    }
    Ok(())
}

/// HTTP/1.1 over TLS (ALPN offers only http/1.1, so every client in the
/// benchmark speaks the same protocol).
fn server_config(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
        });
    }
}
