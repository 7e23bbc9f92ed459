//! Probe-only measurements: the same checks through sitewatch's checker,
//! through blackbox_exporter, and through a bare hyper + rustls client that
//! does only what a check must (resolve, connect, handshake, GET, read the
//! body, look for the word): the physical reference for CPU per check.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use hickory_resolver::TokioResolver;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::target::Target;
use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{CheckRequest, Origin, Outcome, SCHEMA_VERSION};

/// What `probe` runs.
pub struct Plan {
    pub target: Target,
    pub checks: usize,
    pub concurrency: usize,
    /// blackbox_exporter's address and pid (for its CPU).
    pub blackbox: Option<(String, u32)>,
    /// The target's pid: the server side's CPU per probe, for context.
    pub target_pid: Option<u32>,
    /// A CA every client trusts (the bench's test CA).
    pub ca_file: Option<PathBuf>,
    /// Also run the bare client.
    pub bare: bool,
}

/// CPU seconds (user + system) process `pid` has used (`self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Run {
    label: &'static str,
    ok: u64,
    failed: u64,
    elapsed: Duration,
    cpu: f64,
    /// The target's CPU over the run.
    target_cpu: Option<f64>,
    latencies: Vec<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        (self.ok + self.failed) as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_per_probe_us(&self) -> f64 {
        self.per_probe_us(self.cpu)
    }
    fn per_probe_us(&self, cpu: f64) -> f64 {
        cpu * 1e6 / (self.ok + self.failed).max(1) as f64
    }
    fn print(&self) {
        let mut l = self.latencies.clone();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| {
            l.get(((l.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let target = self
            .target_cpu
            .map(|c| format!("  (target {:.0} µs/probe)", self.per_probe_us(c)))
            .unwrap_or_default();
        println!(
            "{:<18} {:>8.0} probes/s  ok {:>7}  failed {:>5}  p50 {:>6.2} ms  p99 {:>6.2} ms  CPU {:>5.1} s = {:>4.0} µs/probe{target}",
            self.label,
            self.rate(),
            self.ok,
            self.failed,
            q(0.50),
            q(0.99),
            self.cpu,
            self.cpu_per_probe_us()
        );
    }
}

/// Runs `probe(i)` for `i` in `0..checks`, `concurrency` at a time; each
/// probe says whether it succeeded and how long it took (ms). CPU is that
/// of process `pid` over the run.
async fn measure<F, Fut>(label: &'static str, pid: &str, plan: &Plan, probe: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (bool, f64)>,
{
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let target = plan.target_pid.map(|p| p.to_string());
    let target0 = target.as_deref().map(cpu_seconds);
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let latencies: Vec<f64> = stream::iter(0..plan.checks)
        .map(|i| {
            let fut = probe(i);
            let (ok, failed) = (&ok, &failed);
            async move {
                let (success, ms) = fut.await;
                let counter = if success { ok } else { failed };
                counter.fetch_add(1, Ordering::Relaxed);
                ms
            }
        })
        .buffer_unordered(plan.concurrency)
        .collect()
        .await;
    Run {
        label,
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        cpu: cpu_seconds(pid) - cpu0,
        target_cpu: target
            .as_deref()
            .map(cpu_seconds)
            .zip(target0)
            .map(|(a, b)| a - b),
        latencies,
    }
}

pub async fn probe(plan: Plan) -> anyhow::Result<()> {
    let settings = CheckerSettings {
        ca_files: plan.ca_file.iter().cloned().collect(),
        ..CheckerSettings::default()
    };
    let http = Arc::new(HttpChecker::new(&settings, "bench")?);
    let now = chrono::Utc::now();
    let request = |i: usize| CheckRequest {
        v: SCHEMA_VERSION,
        check_id: uuid::Uuid::new_v4(),
        site: format!("b{i}"),
        // As a scheduled check: its regex is compiled once and shared.
        origin: Origin::Scheduled,
        scheduled_at: now,
        deadline: now + chrono::Duration::hours(1),
        url: plan.target.url(i),
        method: "GET".into(),
        headers: Default::default(),
        timeout_ms: 5000,
        regex: Some("healthy".into()),
        expect_status: "200-399".into(),
        reuse_connection: false,
        public_only: false,
        options: None,
        requested_by: None,
        late: false,
    };
    // Warm-up: regex cache, page cache, the target's accept queues.
    for i in 0..plan.concurrency {
        http.check(&request(i)).await;
    }
    let mut runs = vec![
        measure("sitewatch", "self", &plan, |i| {
            let (http, req) = (http.clone(), request(i));
            async move {
                let o = http.check(&req).await;
                (o.outcome == Outcome::Up, o.response_time_ms.unwrap_or(0.0))
            }
        })
        .await,
    ];
    if plan.bare {
        let bare = Arc::new(Bare::new(plan.ca_file.as_ref())?);
        runs.push(
            measure("bare hyper+rustls", "self", &plan, |i| {
                let (bare, url) = (bare.clone(), plan.target.url(i));
                async move {
                    let t0 = Instant::now();
                    let ok = bare.get(&url).await.unwrap_or(false);
                    (ok, t0.elapsed().as_secs_f64() * 1e3)
                }
            })
            .await,
        );
    }
    if let Some((bb, pid)) = &plan.blackbox {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(plan.concurrency)
            .build()?;
        runs.push(
            measure("blackbox_exporter", &pid.to_string(), &plan, |i| {
                let url = format!(
                    "http://{bb}/probe?module=http_regex&target={}",
                    plan.target.url(i)
                );
                let client = &client;
                async move {
                    let t0 = Instant::now();
                    let success = match client.get(&url).send().await {
                        Ok(r) => r
                            .text()
                            .await
                            .unwrap_or_default()
                            .contains("probe_success 1"),
                        Err(_) => false,
                    };
                    (success, t0.elapsed().as_secs_f64() * 1e3)
                }
            })
            .await,
        );
    }
    for r in &runs {
        r.print();
    }
    let sw = &runs[0];
    for r in &runs[1..] {
        println!(
            "sitewatch vs {}: {:.2}x the probes/s, {:.2}x the CPU per probe",
            r.label,
            sw.rate() / r.rate(),
            sw.cpu_per_probe_us() / r.cpu_per_probe_us()
        );
    }
    Ok(())
}

/// The least a check can do: resolve (hickory, no cache, as sitewatch by
/// default), connect, shake hands (no session resumption, as sitewatch),
/// GET over HTTP/1.1, read the body, look for "healthy". No timing, no
/// certificate details, no assertions, no outcome.
struct Bare {
    resolver: TokioResolver,
    tls: tokio_rustls::TlsConnector,
    word: regex::bytes::Regex,
}

impl Bare {
    fn new(ca_file: Option<&PathBuf>) -> anyhow::Result<Bare> {
        let mut builder = TokioResolver::builder_tokio()?;
        builder.options_mut().cache_size = 0;
        builder.options_mut().positive_max_ttl = Some(Duration::ZERO);
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = ca_file {
            for cert in CertificateDer::pem_file_iter(path)? {
                roots.add(cert?)?;
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Bare {
            resolver: builder.build()?,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            word: regex::bytes::Regex::new("healthy")?,
        })
    }

    async fn get(&self, url: &str) -> anyhow::Result<bool> {
        let url = url::Url::parse(url)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let ip = match host.parse() {
            Ok(ip) => ip,
            Err(_) => self
                .resolver
                .lookup_ip(host.as_str())
                .await?
                .iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no address"))?,
        };
        let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
        tcp.set_nodelay(true)?;
        let authority = format!("{host}:{port}");
        if url.scheme() == "https" {
            let name = ServerName::try_from(host)?;
            let tls = self.tls.connect(name, tcp).await?;
            let body = exchange(tls, &authority, url.path()).await?;
            Ok(body.is_some_and(|b| self.word.is_match(&b)))
        } else {
            let body = exchange(tcp, &authority, url.path()).await?;
            Ok(body.is_some_and(|b| self.word.is_match(&b)))
        }
    }
}

/// GET `path` over `io`; the body of a 2xx/3xx answer, `None` otherwise.
async fn exchange<S>(io: S, authority: &str, path: &str) -> anyhow::Result<Option<Bytes>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let ok = resp.status().is_success() || resp.status().is_redirection();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(ok.then_some(body))
}
