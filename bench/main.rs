//! `sitewatch-bench`: the benchmark harness (see BENCHMARKS.md).
//!
//! * `target`: an HTTP server with many virtual sites (`/site/N`), on
//!   several loopback addresses so fresh connections do not exhaust one
//!   address's ports; latency, status and body size are flags.
//! * `config`: a config with N sites on that target.
//! * `probe`: the checker alone (no Kafka, no Postgres), one fresh
//!   connection per check and a regex on the body, at a given concurrency;
//!   optionally the same load through blackbox_exporter, side by side.
//! * `report`: after a pipeline run, what Postgres and `/metrics` say.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use clap::{Parser, Subcommand};
use futures::stream::{self, StreamExt};

use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{CheckRequest, Origin, Outcome, SCHEMA_VERSION};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// Loopback addresses 127.0.0.2 .. 127.0.0.(1+addrs).
    #[arg(long, default_value_t = 8)]
    addrs: u8,
    #[arg(long, default_value_t = 18080)]
    port: u16,
}

impl Target {
    fn url(&self, site: usize) -> String {
        let a = 2 + (site % self.addrs as usize);
        format!("http://127.0.0.{a}:{}/site/{site}", self.port)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the virtual sites until killed.
    Target {
        #[command(flatten)]
        target: Target,
        /// Delay before the response.
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        latency: Duration,
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Body bytes (the word "healthy" at the end).
        #[arg(long, default_value_t = 1024)]
        body: usize,
    },
    /// Print a config with N sites on the target (daemon settings from --base).
    Config {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        sites: usize,
        #[arg(long, default_value = "60s")]
        interval: String,
        #[arg(long, default_value = "5s")]
        timeout: String,
        /// A file whose daemon settings come first.
        #[arg(long)]
        base: Option<std::path::PathBuf>,
    },
    /// The checker alone against the target (and blackbox_exporter).
    Probe {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 20_000)]
        checks: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// blackbox_exporter's address, e.g. 127.0.0.1:9115, with a module
        /// `http_regex` (see bench/blackbox.yml).
        #[arg(long)]
        blackbox: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Target {
            target,
            latency,
            status,
            body,
        } => rt.block_on(serve(target, latency, status, body)),
        Command::Config {
            target,
            sites,
            interval,
            timeout,
            base,
        } => {
            if let Some(b) = base {
                print!("{}", std::fs::read_to_string(b)?);
            }
            for i in 0..sites {
                println!(
                    "[[sites]]\nname = \"b{i:06}\"\nurl = \"{}\"\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\nregex = \"healthy\"\n",
                    target.url(i)
                );
            }
            Ok(())
        }
        Command::Probe {
            target,
            checks,
            concurrency,
            blackbox,
        } => rt.block_on(probe(target, checks, concurrency, blackbox)),
    }
}

#[derive(Clone)]
struct Page {
    latency: Duration,
    status: axum::http::StatusCode,
    body: Arc<String>,
}

async fn serve(t: Target, latency: Duration, status: u16, body: usize) -> anyhow::Result<()> {
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
    let mut servers = Vec::new();
    for a in 0..t.addrs {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + a)), t.port);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let app = app.clone();
        servers.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    eprintln!(
        "target: {} addresses 127.0.0.2.. port {}, latency {latency:?}, status {status}, body {body} B",
        t.addrs, t.port
    );
    for s in servers {
        s.await??;
    }
    Ok(())
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
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
    latencies: Vec<f64>,
}

impl Run {
    fn rate(&self) -> f64 {
        (self.ok + self.failed) as f64 / self.elapsed.as_secs_f64()
    }
    fn print(&self) {
        let mut l = self.latencies.clone();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| {
            l.get(((l.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        println!(
            "{:<16} {:>9.0} probes/s  ok {:>7}  failed {:>5}  p50 {:>6.2} ms  p99 {:>6.2} ms  client CPU {:>5.1} s ({:.0} µs/probe)",
            self.label,
            self.rate(),
            self.ok,
            self.failed,
            q(0.50),
            q(0.99),
            self.cpu,
            self.cpu * 1e6 / (self.ok + self.failed).max(1) as f64
        );
    }
}

/// Runs `probe(i)` for `i` in `0..checks`, `concurrency` at a time; each
/// probe says whether it succeeded and how long it took (ms). CPU is this
/// process's.
async fn measure<F, Fut>(label: &'static str, checks: usize, concurrency: usize, probe: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (bool, f64)>,
{
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let latencies: Vec<f64> = stream::iter(0..checks)
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
        .buffer_unordered(concurrency)
        .collect()
        .await;
    Run {
        label,
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        cpu: cpu_seconds() - cpu0,
        latencies,
    }
}

async fn probe(
    t: Target,
    checks: usize,
    concurrency: usize,
    blackbox: Option<String>,
) -> anyhow::Result<()> {
    let http = Arc::new(HttpChecker::new(&CheckerSettings::default(), "bench")?);
    let now = chrono::Utc::now();
    let request = |i: usize| CheckRequest {
        v: SCHEMA_VERSION,
        check_id: uuid::Uuid::new_v4(),
        site: format!("b{i}"),
        // As a scheduled check: its regex is compiled once and shared.
        origin: Origin::Scheduled,
        scheduled_at: now,
        deadline: now + chrono::Duration::hours(1),
        url: t.url(i),
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
    // Warm-up: regex cache, DNS-free URLs, page cache.
    for i in 0..concurrency {
        http.check(&request(i)).await;
    }
    let sw = measure("sitewatch", checks, concurrency, |i| {
        let (http, req) = (http.clone(), request(i));
        async move {
            let o = http.check(&req).await;
            (o.outcome == Outcome::Up, o.response_time_ms.unwrap_or(0.0))
        }
    })
    .await;
    println!("probe-only: {checks} checks, concurrency {concurrency}, fresh connection each, regex on the body");
    sw.print();
    if let Some(bb) = blackbox {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()?;
        let bbr = measure("blackbox_exporter", checks, concurrency, |i| {
            let url = format!("http://{bb}/probe?module=http_regex&target={}", t.url(i));
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
        .await;
        bbr.print();
        println!(
            "ratio: sitewatch {:.1}x blackbox_exporter's probes/s",
            sw.rate() / bbr.rate()
        );
    }
    Ok(())
}
