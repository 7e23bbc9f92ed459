//! `sitewatch-bench`: the benchmark harness (see BENCHMARKS.md).
//!
//! * `target`: many virtual sites (`/site/N`) on several loopback
//!   addresses, over HTTP and HTTPS (ECDSA and RSA leaves of a test CA);
//!   latency, status and body size are flags (target.rs).
//! * `config`: a config with N sites on that target.
//! * `probe`: the checker alone (no Kafka, no Postgres), one fresh
//!   connection per check and a regex on the body, at a given concurrency;
//!   the same checks through blackbox_exporter and a bare hyper + rustls
//!   client, side by side (probe.rs).

mod probe;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use target::{Certs, Target};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the virtual sites until killed.
    Target {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        certs: Certs,
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
        /// `http_regex` (bench/probe.sh writes it).
        #[arg(long, requires = "blackbox_pid")]
        blackbox: Option<String>,
        /// blackbox_exporter's process, for its CPU.
        #[arg(long)]
        blackbox_pid: Option<u32>,
        /// The target's process, for the server side's CPU per probe.
        #[arg(long)]
        target_pid: Option<u32>,
        /// A CA (PEM) every client trusts: the bench's test CA.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Also run the bare hyper + rustls client.
        #[arg(long)]
        bare: bool,
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
            certs,
            latency,
            status,
            body,
        } => rt.block_on(target::serve(target, certs, latency, status, body)),
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
            blackbox_pid,
            target_pid,
            ca_file,
            bare,
        } => rt.block_on(probe::probe(probe::Plan {
            target,
            checks,
            concurrency,
            blackbox: blackbox.zip(blackbox_pid),
            target_pid,
            ca_file,
            bare,
        })),
    }
}
