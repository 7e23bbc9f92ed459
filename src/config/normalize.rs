//! What makes two site URLs "the same target".
//!
//! The seeds ask whether `www.hbo.com`, `http://hbo.com` and `hbo.com/en_fi`
//! are one site. sitewatch answers no: a check is an HTTP request, and each of
//! those is a different request that can succeed while another fails.
//!
//! * A URL must say its scheme (`http` or `https`). `www.hbo.com` alone is
//!   rejected with a hint, because guessing the scheme would silently pick
//!   which of two different checks the operator meant.
//! * `http://` and `https://` are different targets (one can be down, or
//!   redirect, while the other is up).
//! * Hosts are compared as DNS compares them: case-insensitive, IDN names in
//!   their punycode form, a trailing root dot ignored. `www.` is *not*
//!   stripped: `www.hbo.com` and `hbo.com` are different DNS names that may
//!   resolve to different servers.
//! * A port equal to the scheme's default is dropped (`:80` for http, `:443`
//!   for https); an empty path is `/`.
//! * Path and query are kept as written, case included (servers may treat
//!   them case-sensitively): `hbo.com/en_fi` is a different page from
//!   `hbo.com/`.
//! * The fragment (`#...`) is dropped: it is never sent to the server.
//! * Credentials in the URL (`user:pass@`) are refused: URLs are stored in
//!   Postgres and printed in logs; send credentials as a header instead.

use url::Url;

/// Record types a `dns://` check may ask for.
pub const DNS_TYPES: [&str; 6] = ["A", "AAAA", "CNAME", "MX", "TXT", "NS"];

/// A `dns://[server[:port]]/name?type=T` URL: the name is required, the
/// server (an IP; the checker's own servers when left out) and the type
/// (`A` when left out) are not. Normalised to upper-case `type` and a
/// lower-case name without its trailing dot.
fn dns_url(text: &str, mut url: Url) -> Result<Url, String> {
    let usage = "dns://[server[:port]]/name?type=A|AAAA|CNAME|MX|TXT|NS";
    let name = url
        .path()
        .trim_start_matches('/')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if name.is_empty() || name.contains('/') {
        return Err(format!("url {text:?}: write {usage}"));
    }
    if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
        if host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            return Err(format!(
                "url {text:?}: the server must be an IP address ({usage})"
            ));
        }
    }
    let mut kind = "A".to_owned();
    for (k, v) in url.query_pairs() {
        match (k.as_ref(), v.to_ascii_uppercase()) {
            ("type", t) if DNS_TYPES.contains(&t.as_str()) => kind = t,
            ("type", t) => {
                return Err(format!(
                    "url {text:?}: type {t:?} is not one of {DNS_TYPES:?}"
                ))
            }
            (other, _) => {
                return Err(format!(
                    "url {text:?}: unknown parameter {other:?} ({usage})"
                ))
            }
        }
    }
    url.set_path(&format!("/{name}"));
    url.set_query(Some(&format!("type={kind}")));
    Ok(url)
}

/// Parses and normalises a site URL, or says what is wrong with it.
pub fn normalize_url(text: &str) -> Result<Url, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("url is empty".into());
    }
    if !text.contains("://") {
        return Err(format!(
            "url {text:?} has no scheme; write \"https://{text}\" or \"http://{text}\" \
             (they are different checks)"
        ));
    }
    let mut url = Url::parse(text).map_err(|e| format!("url {text:?} is not valid: {e}"))?;
    let tcp = match url.scheme() {
        "http" | "https" => false,
        "tcp" | "tls" => true,
        "dns" => return dns_url(text, url),
        other => {
            return Err(format!(
                "unsupported scheme {other:?} in url {text:?}; the checks are http://, https://, \
                 tcp://host:port, tls://host:port and dns://[server]/name"
            ))
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Do not echo the URL: it holds a credential.
        return Err("url contains credentials (user:password@); \
                    send them in an Authorization header instead"
            .into());
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.to_owned(),
        _ => return Err(format!("url {text:?} has no host")),
    };
    if let Some(stripped) = host.strip_suffix('.') {
        if stripped.is_empty() {
            return Err(format!("url {text:?} has no host"));
        }
        url.set_host(Some(stripped))
            .map_err(|e| format!("url {text:?} has an invalid host: {e}"))?;
    }
    url.set_fragment(None);
    if tcp {
        if url.port().is_none() {
            return Err(format!(
                "url {text:?}: a tcp:// URL needs a port (tcp://host:port)"
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(format!(
                "url {text:?}: a tcp:// URL is tcp://host:port, with no path or query"
            ));
        }
        // Not a special scheme to `Url`: lowercase the host and drop the
        // path ourselves, so equal targets compare equal.
        let lower = url.host_str().unwrap_or_default().to_ascii_lowercase();
        url.set_host(Some(&lower))
            .map_err(|e| format!("url {text:?} has an invalid host: {e}"))?;
        url.set_path("");
        return Ok(url);
    }
    // `Url` already lowercases scheme and host, converts IDN to punycode,
    // drops default ports and turns an empty path into `/`.
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_url(s).unwrap().to_string()
    }

    #[test]
    fn same_target_in_different_spellings() {
        let a = n("http://hbo.com");
        assert_eq!(a, "http://hbo.com/");
        assert_eq!(n("HTTP://HBO.com:80/"), a);
        assert_eq!(n("http://hbo.com./"), a);
        assert_eq!(n("http://hbo.com/#top"), a);
        assert_eq!(n("  http://hbo.com  "), a);
        assert_eq!(n("https://hbo.com:443"), "https://hbo.com/");
    }

    #[test]
    fn the_seed_question_three_different_sites() {
        // `www.hbo.com` needs a scheme; with one, all three are distinct.
        let err = normalize_url("www.hbo.com").unwrap_err();
        assert!(err.contains("no scheme"), "{err}");
        assert!(normalize_url("hbo.com/en_fi")
            .unwrap_err()
            .contains("no scheme"));
        let www = n("http://www.hbo.com");
        let bare = n("http://hbo.com");
        let page = n("http://hbo.com/en_fi");
        assert_ne!(www, bare);
        assert_ne!(bare, page);
        assert_ne!(n("https://hbo.com"), bare);
    }

    #[test]
    fn path_and_query_keep_their_case() {
        assert_ne!(n("http://a.example/Path"), n("http://a.example/path"));
        assert_ne!(n("http://a.example/?q=A"), n("http://a.example/?q=a"));
        assert_eq!(n("http://A.Example/Path?q=A"), "http://a.example/Path?q=A");
    }

    #[test]
    fn tcp_urls_need_a_port_and_nothing_after_it() {
        assert_eq!(n("tcp://Mail.Example:25"), "tcp://mail.example:25");
        assert_eq!(n("tcp://mail.example:25/"), "tcp://mail.example:25");
        assert_eq!(n("tcp://[::1]:6379"), "tcp://[::1]:6379");
        for bad in [
            "tcp://mail.example",
            "tcp://mail.example:25/x",
            "tcp://m.example:25?q",
        ] {
            let e = normalize_url(bad).unwrap_err();
            assert!(e.contains("tcp://host:port"), "{bad}: {e}");
        }
        let e = normalize_url("ftp://a.example/").unwrap_err();
        assert!(e.contains("tcp://host:port"), "{e}");
    }

    #[test]
    fn dns_urls_name_a_name_a_type_and_maybe_a_server() {
        assert_eq!(n("dns:///Example.COM."), "dns:///example.com?type=A");
        assert_eq!(
            n("dns://10.0.0.2:5353/example.com?type=mx"),
            "dns://10.0.0.2:5353/example.com?type=MX"
        );
        for (bad, says) in [
            ("dns://10.0.0.2/", "dns://[server[:port]]/name"),
            ("dns://ns.example/example.com", "must be an IP address"),
            ("dns:///example.com?type=SOA", "not one of"),
            ("dns:///example.com?class=IN", "unknown parameter"),
        ] {
            let e = normalize_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn non_default_port_is_kept() {
        assert_eq!(n("http://a.example:8080"), "http://a.example:8080/");
        assert_ne!(n("http://a.example:8080"), n("http://a.example"));
    }

    #[test]
    fn idn_hosts_become_punycode() {
        assert_eq!(
            n("https://bücher.example/"),
            "https://xn--bcher-kva.example/"
        );
    }

    #[test]
    fn rejects_what_cannot_be_checked() {
        assert!(normalize_url("ftp://a.example/")
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!(normalize_url("").is_err());
        assert!(normalize_url("http://").is_err());
        assert!(normalize_url("http://exa mple.com/").is_err());
        let err = normalize_url("https://bob:hunter2@a.example/").unwrap_err();
        assert!(err.contains("credentials"));
        assert!(!err.contains("hunter2"));
    }
}
