//! Name resolution for checks: an async resolver (hickory) owned by the
//! checker. getaddrinfo (`tokio::net::lookup_host`) runs on the blocking
//! pool, cannot be cancelled when a check's deadline passes, cannot be
//! pointed at other servers, and folds every failure into one message; this
//! resolver is cancelled with its check, asks `checker.dns_servers` (or the
//! servers of `/etc/resolv.conf`), and tells NXDOMAIN, SERVFAIL, an empty
//! answer and silence apart.
//!
//! Each check resolves afresh unless `checker.dns_cache` is set: a monitor
//! must see a DNS fault when it happens, not when a cached answer expires.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::TokioResolver;

use super::connect::Fail;
use crate::config::parse_dns_server;
use crate::model::{ErrorKind, IpFamily};
use crate::telemetry::metrics as m;

/// `checker.dns_servers` could not be used, or `/etc/resolv.conf` could not
/// be read.
#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    #[error("checker.dns_servers: {0:?} is not an IP address or IP:port")]
    BadServer(String),
    #[error("reading the system's DNS configuration (/etc/resolv.conf): {0}")]
    System(String),
    #[error("starting the DNS resolver: {0}")]
    Build(String),
}

/// The checker's resolver: one hickory resolver per address-family
/// strategy, since hickory sets which of A and AAAA it asks per resolver,
/// not per lookup.
pub struct Resolver {
    /// A and AAAA in parallel (`any`, `prefer_ipv4`; ordered later).
    both: TokioResolver,
    v4: TokioResolver,
    v6: TokioResolver,
    /// The servers asked, for messages: "127.0.0.1:53, 10.0.0.2:53".
    servers: String,
    /// The first of them: where a `dns://` check without a server asks.
    first: Option<SocketAddr>,
}

impl Resolver {
    /// A resolver asking `servers` (`IP[:port]` each), or the system's
    /// servers, search domains and options when `servers` is empty.
    /// `cache`: keep answers for their TTL instead of asking every time.
    /// `/etc/hosts` is honoured either way, as getaddrinfo does.
    pub fn new(servers: &[String], cache: bool) -> Result<Resolver, ResolverSetupError> {
        let (config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ResolverSetupError::System(e.to_string()))?
        } else {
            let mut name_servers = Vec::with_capacity(servers.len());
            for s in servers {
                let addr =
                    parse_dns_server(s).ok_or_else(|| ResolverSetupError::BadServer(s.clone()))?;
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                name_servers.push(NameServerConfig::new(addr.ip(), true, vec![udp, tcp]));
            }
            (
                ResolverConfig::from_name_servers(name_servers),
                ResolverOpts::default(),
            )
        };
        let addrs: Vec<SocketAddr> = config
            .name_servers()
            .iter()
            .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
            .collect();
        let listed = addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        opts.use_hosts_file = ResolveHosts::Always;
        // A truncated UDP answer is asked again over TCP, as stub resolvers do.
        opts.try_tcp_on_error = true;
        if !cache {
            opts.cache_size = 0;
            opts.positive_max_ttl = Some(Duration::ZERO);
            opts.negative_max_ttl = Some(Duration::ZERO);
        }
        let build = |strategy: LookupIpStrategy| {
            let mut opts = opts.clone();
            opts.ip_strategy = strategy;
            TokioResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| ResolverSetupError::Build(e.to_string()))
        };
        Ok(Resolver {
            both: build(LookupIpStrategy::Ipv4AndIpv6)?,
            v4: build(LookupIpStrategy::Ipv4Only)?,
            v6: build(LookupIpStrategy::Ipv6Only)?,
            first: addrs.first().copied(),
            servers: if listed.is_empty() {
                "no DNS server (none in /etc/resolv.conf)".into()
            } else {
                listed
            },
        })
    }

    /// The first configured DNS server (`checker.dns_servers`, else
    /// `/etc/resolv.conf`), if any.
    pub fn first_server(&self) -> Option<SocketAddr> {
        self.first
    }

    /// The addresses of `host` (a name, not a literal) for `family`, in the
    /// order the answers gave them. Not bounded in time here: the caller's
    /// deadline cancels the lookup by dropping it. Every failure is
    /// `ErrorKind::Dns`, with a message naming the answer (NXDOMAIN,
    /// SERVFAIL, REFUSED, no record of the asked type, no answer at all).
    pub async fn lookup(&self, host: &str, family: IpFamily) -> Result<Vec<IpAddr>, Fail> {
        let resolver = match family {
            IpFamily::Ipv4 => &self.v4,
            IpFamily::Ipv6 => &self.v6,
            IpFamily::Any | IpFamily::PreferIpv4 | IpFamily::PreferIpv6 => &self.both,
        };
        // A trailing dot makes the name absolute: no search-domain queries.
        let result = resolver.lookup_ip(host).await;
        let (label, found) = match result {
            Ok(answer) => {
                let ips: Vec<IpAddr> = answer.iter().collect();
                if ips.is_empty() {
                    ("no_answer", Err(self.no_record(host, family)))
                } else {
                    ("ok", Ok(ips))
                }
            }
            Err(e) => {
                let (label, why) = self.describe(host, family, &e);
                (label, Err(Fail::new(ErrorKind::Dns, why)))
            }
        };
        metrics::counter!(m::DNS_LOOKUPS, "result" => label).increment(1);
        found
    }

    /// The message for a lookup that the caller's deadline cut short.
    pub fn timed_out(&self, host: &str, after: Duration) -> String {
        metrics::counter!(m::DNS_LOOKUPS, "result" => "timeout").increment(1);
        format!(
            "resolving {host}: no answer from {} within {after:?} (timed out)",
            self.servers
        )
    }

    fn no_record(&self, host: &str, family: IpFamily) -> Fail {
        Fail::new(
            ErrorKind::Dns,
            format!(
                "resolving {host}: the name exists but has no {} record (NOERROR, empty answer \
                 from {})",
                asked(family),
                self.servers
            ),
        )
    }

    /// A metrics label and a message for a failed lookup.
    fn describe(&self, host: &str, family: IpFamily, e: &NetError) -> (&'static str, String) {
        let from = &self.servers;
        match e {
            NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
                ResponseCode::NXDomain => (
                    "nxdomain",
                    format!("resolving {host}: NXDOMAIN, the name does not exist (from {from})"),
                ),
                _ => ("no_answer", self.no_record(host, family).message),
            },
            NetError::Dns(DnsError::ResponseCode(code)) => {
                let label = match code {
                    ResponseCode::ServFail => "servfail",
                    ResponseCode::Refused => "refused",
                    _ => "error",
                };
                let meaning = match code {
                    ResponseCode::ServFail => ", the server could not answer",
                    ResponseCode::Refused => ", the server refused to answer",
                    _ => "",
                };
                (
                    label,
                    format!(
                        "resolving {host}: {}{meaning} (from {from})",
                        code_name(*code)
                    ),
                )
            }
            NetError::Timeout => (
                "timeout",
                format!("resolving {host}: no answer from {from} (timed out)"),
            ),
            NetError::NoConnections => (
                "unreachable",
                format!("resolving {host}: no DNS server could be reached ({from})"),
            ),
            other => (
                "error",
                format!("resolving {host} (servers {from}): {other}"),
            ),
        }
    }
}

/// The record types asked for `family`.
fn asked(family: IpFamily) -> &'static str {
    match family {
        IpFamily::Ipv4 => "A",
        IpFamily::Ipv6 => "AAAA",
        _ => "A or AAAA",
    }
}

/// The RFC 1035 / RFC 6895 mnemonic of a response code.
fn code_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        other => format!("response code {}", u16::from(other)),
    }
}
