//! Server-side request forgery: an on-demand check must not make sitewatch
//! reach into its own network. A target whose host is, or resolves to, a
//! loopback, private, shared (CGNAT), link-local (cloud metadata at
//! 169.254.169.254 included) or unspecified address is refused unless
//! `api.allow_private_targets` is set: by the API when the check is asked
//! for, and by the checker at every connection, redirects included (its
//! resolver drops such addresses, so DNS rebinding does not get through).

use std::net::IpAddr;

/// True for addresses on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The address of `url`'s host when it is written as an IP literal.
pub fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// A DNS resolver for public-only checks: it drops every non-public
/// address, and fails when none is left. Connections of such checks,
/// redirects included, can only reach public addresses.
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to non-public addresses ({}); refused for an on-demand check",
                    all.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
                )
                .into();
                return Err(e);
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Resolves `url`'s host and refuses it when any address is not public.
pub async fn refuse_private(url: &url::Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::net::lookup_host((bare, port)).await {
            Ok(a) => a.map(|s| s.ip()).collect(),
            // Unresolvable now: the check will report the DNS failure.
            Err(_) => return Ok(()),
        },
    };
    match addrs.into_iter().find(|ip| !is_public(*ip)) {
        Some(ip) => Err(format!(
            "{host} resolves to {ip}, which is not a public address; on-demand checks of \
             private networks are refused (api.allow_private_targets)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
