//! Checks that judge as a browser or curl would (issue: "Checks that judge
//! like a browser"): cookies along a redirect chain, raw bytes in
//! `Location`, many header fields, content codings the server chose,
//! certificate chains, weak keys with verification off, bodies that end
//! without TLS `close_notify`. Each kind has the reported case and one of
//! our own, against local servers.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use sitewatch::checker::HttpChecker;
use sitewatch::config::CheckerSettings;
use sitewatch::model::{CheckOptions, CheckOutcome, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::request;

/// A raw HTTP/1.1 server: `answer` maps each request head (lowercased) to
/// the bytes to send back; every connection is closed after one answer.
async fn raw_server<F>(answer: F) -> (u16, Arc<Mutex<Vec<String>>>)
where
    F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (kept, answer) = (kept.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                kept.lock().unwrap().push(head.clone());
                let _ = s.write_all(&answer(&head)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, heads)
}

fn ok(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn redirect(location: &[u8], extra: &str) -> Vec<u8> {
    let mut r = b"HTTP/1.1 302 Found\r\nLocation: ".to_vec();
    r.extend_from_slice(location);
    r.extend_from_slice(
        format!("\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    r
}

async fn check(url: &str, options: CheckOptions) -> CheckOutcome {
    check_with(url, options, Vec::new()).await
}

async fn check_with(
    url: &str,
    options: CheckOptions,
    ca_files: Vec<std::path::PathBuf>,
) -> CheckOutcome {
    let settings = CheckerSettings {
        ca_files,
        ..CheckerSettings::default()
    };
    let mut req = request("browserlike", chrono::Utc::now(), url);
    req.timeout_ms = 3000;
    req.options = Some(options);
    HttpChecker::new(&settings, "t").unwrap().check(&req).await
}

async fn check_regex(url: &str, pattern: &str) -> CheckOutcome {
    let mut req = request("browserlike", chrono::Utc::now(), url);
    req.timeout_ms = 3000;
    req.regex = Some(pattern.to_owned());
    HttpChecker::new(&CheckerSettings::default(), "t")
        .unwrap()
        .check(&req)
        .await
}

/// `verify_tls = false`.
fn insecure_options() -> CheckOptions {
    CheckOptions {
        verify_tls: false,
        ..CheckOptions::default()
    }
}

fn up(out: &CheckOutcome) {
    assert_eq!(out.outcome, Outcome::Up, "{out:?}");
}

#[tokio::test]
async fn cookies_set_along_the_redirect_chain_are_sent_by_the_rules() {
    // The reported case: /gate sets a cookie and redirects to itself.
    let (port, _) = raw_server(|head| {
        if head.contains("cookie: seen=1") {
            ok(b"welcome member", "")
        } else {
            redirect(b"/gate", "Set-Cookie: seen=1\r\n")
        }
    })
    .await;
    let out = check_regex(&format!("http://127.0.0.1:{port}/gate"), "welcome member").await;
    up(&out);
    assert_eq!(out.timing.as_ref().unwrap().redirects, 1);

    // Our own: a cookie scoped to /app reaches /app/home, and not /other.
    let (port, heads) = raw_server(|head| {
        if head.starts_with("get /login") {
            redirect(b"/app/home", "Set-Cookie: sid=42; Path=/app\r\n")
        } else if head.starts_with("get /app/home") && head.contains("cookie: sid=42") {
            redirect(b"/other", "")
        } else if head.starts_with("get /other") {
            ok(b"signed in", "")
        } else {
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    })
    .await;
    let out = check_regex(&format!("http://127.0.0.1:{port}/login"), "signed in").await;
    up(&out);
    let other = heads
        .lock()
        .unwrap()
        .iter()
        .find(|h| h.starts_with("get /other"))
        .cloned()
        .unwrap();
    assert!(
        !other.contains("sid=42"),
        "a /app cookie sent to /other: {other}"
    );
}

#[tokio::test]
async fn raw_bytes_in_location_are_percent_encoded() {
    let (port, _) = raw_server(|head| {
        if head.starts_with("get /caf%c3%a9 ") {
            ok(b"menu du jour", "")
        } else if head.starts_with("get /a%20b ") {
            ok(b"spaced out", "")
        } else if head.starts_with("get /start-space") {
            redirect(b"/a b", "")
        } else {
            redirect("/café".as_bytes(), "")
        }
    })
    .await;
    let out = check_regex(&format!("http://127.0.0.1:{port}/start"), "menu du jour").await;
    up(&out);
    assert_eq!(out.timing.as_ref().unwrap().redirects, 1);
    // Our own: a space in the location.
    let out = check_regex(
        &format!("http://127.0.0.1:{port}/start-space"),
        "spaced out",
    )
    .await;
    up(&out);
}

#[tokio::test]
async fn many_header_fields_and_large_heads_within_browser_limits_are_read() {
    let (port, _) = raw_server(|head| {
        let mut extra = String::new();
        if head.starts_with("get /many") {
            for i in 0..300 {
                extra.push_str(&format!("X-F-{i}: v{i}\r\n"));
            }
            ok(b"many headers ok", &extra)
        } else {
            // Our own: one 100 KiB header value.
            extra.push_str(&format!("X-Big: {}\r\n", "b".repeat(100 * 1024)));
            ok(b"big header ok", &extra)
        }
    })
    .await;
    up(&check_regex(&format!("http://127.0.0.1:{port}/many"), "many headers ok").await);
    up(&check_regex(&format!("http://127.0.0.1:{port}/big"), "big header ok").await);
}

#[tokio::test]
async fn bodies_in_a_content_coding_the_server_chose_are_decoded() {
    let text = b"all systems operational";
    let gzip = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    };
    let deflate = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    };
    let br = {
        let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        e.write_all(text).unwrap();
        e.into_inner()
    };
    let (port, heads) = raw_server(move |head| {
        let (body, coding) = if head.starts_with("get /gzip") {
            (&gzip, "gzip")
        } else if head.starts_with("get /deflate") {
            (&deflate, "deflate")
        } else {
            (&br, "br")
        };
        ok(body, &format!("Content-Encoding: {coding}\r\n"))
    })
    .await;
    for path in ["/gzip", "/deflate", "/br"] {
        let out = check_regex(
            &format!("http://127.0.0.1:{port}{path}"),
            "all systems operational",
        )
        .await;
        up(&out);
        assert_eq!(out.body_bytes, Some(text.len() as u64), "{path}");
    }
    // Sent as browsers do.
    assert!(heads.lock().unwrap()[0].contains("accept-encoding: gzip, deflate, br"));
}

/// An HTTPS server of the test's own: `chain` (leaf first) and its key,
/// answering every request with `response` and then closing TCP without a
/// TLS `close_notify` when `abrupt`.
async fn tls_server(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    response: &'static [u8],
    abrupt: bool,
) -> u16 {
    tls_server_on("127.0.0.1:0", chain, key, response, abrupt).await
}

/// [`tls_server`] on the address `bind`.
async fn tls_server_on(
    bind: &str,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    response: &'static [u8],
    abrupt: bool,
) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let _ = tls.read(&mut buf).await;
                let _ = tls.write_all(response).await;
                let _ = tls.flush().await;
                if abrupt {
                    // Drop the TCP stream under the TLS session: no alert.
                    let (tcp, _) = tls.into_inner();
                    drop(tcp);
                } else {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// [`tls_server`] with a fresh chain for 127.0.0.1, valid 300 days, and
/// the root's PEM in a file for `checker.ca_files`.
async fn trusted_tls_server(
    response: &'static [u8],
    abrupt: bool,
) -> (u16, tempfile::NamedTempFile) {
    let (certs, key, root) = chain(300, 300);
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), root).unwrap();
    (tls_server(certs, key, response, abrupt).await, ca)
}

/// A chain as a server presents it (leaf first), the leaf's key, and the
/// root's PEM for the checker to trust.
type Chain = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
    String,
);

/// [`chain_for`] 127.0.0.1.
fn chain(intermediate_days: i64, leaf_days: i64) -> Chain {
    chain_for("127.0.0.1", intermediate_days, leaf_days)
}

/// A CA, an intermediate expiring in `intermediate_days` and a leaf for
/// `host` expiring in `leaf_days`: (chain as served, leaf key, CA PEM).
fn chain_for(host: &str, intermediate_days: i64, leaf_days: i64) -> Chain {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ymd = |d: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    let ca_params = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_before = ymd(now - chrono::Duration::days(30));
        p
    };
    let mut root = ca_params();
    root.distinguished_name
        .push(DnType::CommonName, "test root");
    root.not_after = ymd(now + chrono::Duration::days(3650));
    let root_key = KeyPair::generate().unwrap();
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root, root_key);

    let mut mid = ca_params();
    mid.distinguished_name
        .push(DnType::CommonName, "test intermediate");
    mid.not_after = ymd(now + chrono::Duration::days(intermediate_days));
    let mid_key = KeyPair::generate().unwrap();
    let mid_cert = mid.signed_by(&mid_key, &root_issuer).unwrap();
    let mid_issuer = Issuer::new(mid, mid_key);

    let mut leaf = CertificateParams::new(vec![host.to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "test leaf");
    leaf.not_before = ymd(now - chrono::Duration::days(1));
    leaf.not_after = ymd(now + chrono::Duration::days(leaf_days));
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &mid_issuer).unwrap();
    (
        vec![
            leaf_cert.der().clone().into_owned(),
            mid_cert.der().clone().into_owned(),
        ],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        root_cert.pem(),
    )
}

#[tokio::test]
async fn min_cert_days_judges_the_chain_the_server_presents() {
    const BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    for (mid_days, leaf_days, expect_up, who) in [
        (5, 300, false, "test intermediate"),
        // Our own: the leaf expires first.
        (300, 7, false, "test leaf"),
        (300, 200, true, ""),
    ] {
        let (certs, key, root) = chain(mid_days, leaf_days);
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), root).unwrap();
        let port = tls_server(certs, key, BODY, false).await;
        let options = CheckOptions {
            min_cert_days: Some(14),
            ..CheckOptions::default()
        };
        let out = check_with(
            &format!("https://127.0.0.1:{port}/"),
            options,
            vec![ca.path().to_path_buf()],
        )
        .await;
        if expect_up {
            up(&out);
        } else {
            assert_eq!(out.outcome, Outcome::Down, "{out:?}");
            assert_eq!(out.error_kind.map(|k| k.as_str()), Some("cert_expiring"));
            let tls = out.tls.as_ref().unwrap();
            assert!(tls.subject.contains(who), "{} not named: {tls:?}", who);
        }
    }
}

#[tokio::test]
async fn a_close_delimited_body_without_close_notify_is_accepted() {
    // No Content-Length: the body ends when the connection does.
    let (port, ca) = trusted_tls_server(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nlegacy tls body ok",
        true,
    )
    .await;
    let mut req = request(
        "legacy",
        chrono::Utc::now(),
        &format!("https://127.0.0.1:{port}/"),
    );
    req.regex = Some("legacy tls body ok".into());
    let settings = CheckerSettings {
        ca_files: vec![ca.path().to_path_buf()],
        ..CheckerSettings::default()
    };
    let out = HttpChecker::new(&settings, "t").unwrap().check(&req).await;
    up(&out);
}

#[tokio::test]
async fn verification_off_accepts_any_certificate_even_a_self_signed_one() {
    // A self-signed leaf for another name: refused when verified, accepted
    // (with its details recorded) when not.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["appliance.invalid".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let port = tls_server(
        vec![cert.der().clone().into_owned()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        false,
    )
    .await;
    let url = format!("https://127.0.0.1:{port}/");
    let verified = check(&url, CheckOptions::default()).await;
    assert_eq!(verified.outcome, Outcome::Down, "{verified:?}");
    let insecure = check(&url, insecure_options()).await;
    up(&insecure);
    assert!(insecure.tls.is_some());
}

/// An old appliance: a self-signed certificate on a 1024-bit RSA key, which
/// webpki (and so rustls) refuses even to verify a handshake signature
/// with. Served by OpenSSL at security level 0, in a thread of its own.
fn weak_key_server() -> u16 {
    openssl_server(|_| {})
}

/// An OpenSSL server with a self-signed 1024-bit RSA certificate, set up
/// further by `configure`, in a thread of its own.
fn openssl_server(configure: impl FnOnce(&mut openssl::ssl::SslAcceptorBuilder)) -> u16 {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let rsa = openssl::rsa::Rsa::generate(1024).unwrap();
    let key = openssl::pkey::PKey::from_rsa(rsa).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "old appliance").unwrap();
    let name = name.build();
    let mut cert = openssl::x509::X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&openssl::asn1::Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    cert.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let cert = cert.build();
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_security_level(0);
    acceptor.set_private_key(&key).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    configure(&mut acceptor);
    let acceptor = acceptor.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Ok(mut tls) = acceptor.accept(stream) {
                use std::io::Read as _;
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf);
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nappliance ok!",
                );
                let _ = tls.shutdown();
            }
        }
    });
    port
}

#[tokio::test]
async fn verification_off_accepts_a_weak_key_as_curl_insecure_does() {
    let port = weak_key_server();
    let url = format!("https://127.0.0.1:{port}/");
    let insecure = check(&url, insecure_options()).await;
    up(&insecure);
    assert!(
        insecure
            .tls
            .as_ref()
            .unwrap()
            .subject
            .contains("old appliance"),
        "{insecure:?}"
    );
    // Verified, it is refused (self-signed), whatever the key.
    let verified = check(&url, CheckOptions::default()).await;
    assert_eq!(verified.outcome, Outcome::Down);
}

/// An https URL whose host is an IPv6 literal is verified against that IP
/// (the brackets are the URL's, not the name's).
#[tokio::test]
async fn an_ipv6_literal_is_verified_as_an_ip() {
    let (certs, key, root) = chain_for("::1", 300, 300);
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), root).unwrap();
    let port = tls_server_on(
        "[::1]:0",
        certs,
        key,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        false,
    )
    .await;
    let out = check_with(
        &format!("https://[::1]:{port}/"),
        CheckOptions::default(),
        vec![ca.path().to_path_buf()],
    )
    .await;
    up(&out);
}

/// A server that speaks only CBC-mode TLS 1.2 suites gets a message naming
/// the likely cause, not a bare "handshake failure". Our own case of the
/// kind: one that speaks only TLS 1.1.
#[tokio::test]
async fn a_server_with_only_suites_rustls_lacks_is_named_as_such() {
    let cbc = openssl_server(|a| {
        a.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        a.set_cipher_list("AES128-SHA:AES256-SHA").unwrap();
    });
    let old = openssl_server(|a| {
        a.set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_1))
            .unwrap();
        a.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_1))
            .unwrap();
    });
    for port in [cbc, old] {
        let out = check(&format!("https://127.0.0.1:{port}/"), insecure_options()).await;
        assert_eq!(out.error_kind.map(|k| k.as_str()), Some("tls"), "{out:?}");
        let message = out.error_message.unwrap_or_default();
        assert!(
            message.contains("no cipher suite or TLS version in common"),
            "{message}"
        );
    }
}

/// The other side of the leniency: a body whose length was announced and
/// that ends early without `close_notify` is still a failure (truncation).
#[tokio::test]
async fn an_announced_body_cut_short_without_close_notify_still_fails() {
    let (port, ca) = trusted_tls_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        true,
    )
    .await;
    let out = check_with(
        &format!("https://127.0.0.1:{port}/"),
        CheckOptions::default(),
        vec![ca.path().to_path_buf()],
    )
    .await;
    assert_eq!(out.outcome, Outcome::Down, "{out:?}");
    assert_eq!(out.error_kind.map(|k| k.as_str()), Some("body"), "{out:?}");
}

/// Header values with obsolete bytes (Latin-1, RFC 9110's obs-text) and odd
/// but harmless spacing are read as browsers read them.
#[tokio::test]
async fn odd_bytes_in_header_values_are_accepted() {
    let (port, _) = raw_server(|_| {
        let mut r = b"HTTP/1.1 200 OK\r\nX-Place: caf".to_vec();
        r.push(0xe9);
        r.extend_from_slice(b"\r\nX-Spaced:    padded value   \r\nContent-Length: 7\r\nConnection: close\r\n\r\nodd ok!");
        r
    })
    .await;
    up(&check_regex(&format!("http://127.0.0.1:{port}/"), "odd ok").await);
}
