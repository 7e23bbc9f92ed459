//! Server-side request forgery: an on-demand check must not make sitewatch
//! reach into its own network. A target whose host is, or resolves to, an
//! address that is not globally reachable (loopback, private, shared
//! (CGNAT), link-local with cloud metadata at 169.254.169.254, benchmarking,
//! documentation, reserved, multicast, and IPv6 forms that embed such an
//! IPv4 address) is refused unless `api.allow_private_targets` is set: by
//! the API when the check is asked for, and by the checker at every
//! connection, redirects included (its resolver drops such addresses, so DNS
//! rebinding does not get through).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// IPv4 blocks that are not public targets: every entry of the IANA IPv4
/// Special-Purpose Address Registry whose "Globally Reachable" is false or
/// N/A (https://www.iana.org/assignments/iana-ipv4-special-registry/,
/// RFC 6890), the deprecated 6to4 relay anycast block, and multicast
/// (RFC 5771). 192.0.0.0/24 is refused whole, although two of its /32s are
/// global anycast services: no website lives there.
const V4_NOT_PUBLIC: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network" (RFC 791)
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space, CGNAT (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback (RFC 1122)
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link local, cloud metadata (RFC 3927)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private (RFC 1918)
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments (RFC 6890)
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation, TEST-NET-1 (RFC 5737)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast, deprecated (RFC 7526)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private (RFC 1918)
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking (RFC 2544)
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation, TEST-NET-2 (RFC 5737)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation, TEST-NET-3 (RFC 5737)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast (RFC 5771)
    (Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, and 255.255.255.255 broadcast (RFC 1112, RFC 919)
];

/// IPv6 blocks that are not public targets: the IANA IPv6 Special-Purpose
/// Address Registry's entries that are not globally reachable
/// (https://www.iana.org/assignments/iana-ipv6-special-registry/), plus
/// multicast, the deprecated site-local and IPv4-compatible blocks. The
/// IETF protocol assignments block 2001::/23 (Teredo, benchmarking, ORCHID,
/// a few anycast services) is refused whole. Blocks that embed an IPv4
/// address (mapped, NAT64, 6to4) are judged by that address instead, see
/// [`embedded_v4`].
const V6_NOT_PUBLIC: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96), // unspecified, loopback, IPv4-compatible (RFC 4291)
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use IPv4/IPv6 translation (RFC 8215)
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only (RFC 6666)
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64),     // dummy prefix (RFC 9780)
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),    // IETF protocol assignments (RFC 2928)
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation (RFC 3849)
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),    // documentation (RFC 9637)
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),    // segment routing SIDs (RFC 9602)
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),     // unique local (RFC 4193)
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),    // link local (RFC 4291)
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),    // site local, deprecated (RFC 3879)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),     // multicast (RFC 4291)
];

fn v4_in(ip: Ipv4Addr, blocks: &[(Ipv4Addr, u8)]) -> bool {
    blocks
        .iter()
        .any(|&(net, len)| Ipv4Net::new(net, len).is_ok_and(|n| n.contains(&ip)))
}

fn v6_in(ip: Ipv6Addr, blocks: &[(Ipv6Addr, u8)]) -> bool {
    blocks
        .iter()
        .any(|&(net, len)| Ipv6Net::new(net, len).is_ok_and(|n| n.contains(&ip)))
}

/// The IPv4 address an IPv6 address leads to, for the forms that carry one
/// to an IPv4 host: IPv4-mapped `::ffff:0:0/96` (RFC 4291), the NAT64
/// well-known prefix `64:ff9b::/96` (RFC 6052) and 6to4 `2002::/16`
/// (RFC 3056, the address in bits 16 to 47).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(tail(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(tail(s[1], s[2]))
    } else {
        None
    }
}

/// True for addresses a public website may have: globally reachable
/// unicast, per the IANA special-purpose registries (see the tables above).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4_in(v4, V4_NOT_PUBLIC),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => !v6_in(v6, V6_NOT_PUBLIC),
        },
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
            // IPv4-compatible, NAT64 and 6to4 forms of private addresses.
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            // Benchmarking, documentation, reserved, broadcast, multicast.
            "198.18.0.1",
            "198.19.255.254",
            "192.0.2.1",
            "203.0.113.9",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "192.88.99.1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "198.20.0.1",
            "100.128.0.1",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
            "2a00:1450:4001::1",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
