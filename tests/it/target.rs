//! A local HTTP target server standing in for the internet: each path is a
//! behaviour (up, 500, delayed, hanging, redirect loop). Hand-written on
//! tokio so tests control every byte and every delay.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Target {
    pub addr: SocketAddr,
}

impl Target {
    pub async fn start() -> Target {
        Target::start_on("127.0.0.1").await
    }

    /// On another loopback address (127.0.0.2 ...): another host.
    pub async fn start_on(ip: &str) -> Target {
        Target {
            addr: listen_on(ip, serve).await,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Listens on a loopback port and hands each connection to `handle`.
async fn listen_on<F, Fut>(ip: &str, handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// A port on loopback where nothing listens.
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut nth = 1;
    while serve_one(&mut stream, nth).await {
        nth += 1;
    }
}

/// Answers one request; true to wait for another on the same connection.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, nth: u32) -> bool {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return false;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let (status, extra, body): (u16, String, String) = match path.as_str() {
        "/ok" => (200, String::new(), "hello from sitewatch target".into()),
        // Keeps the connection open for the next request, and says which
        // request on it this is.
        "/keep" => {
            let body = format!("request {nth} on this connection");
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            return stream.write_all(response.as_bytes()).await.is_ok();
        }
        "/500" => (500, String::new(), "internal error".into()),
        // The method and the request body, sent back.
        "/echo" => {
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = buf[end..].to_vec();
            while body.len() < length {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                }
            }
            let method = head.split_whitespace().next().unwrap_or("").to_owned();
            (
                200,
                String::new(),
                format!("{method} {}", String::from_utf8_lossy(&body)),
            )
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return false;
        }
        "/loop" => (302, "Location: /loop\r\n".into(), String::new()),
        // An error page served with 200 and a header that should not be there.
        "/headers" => (
            200,
            "X-Debug: 1\r\n".into(),
            "Fatal error: database unreachable".into(),
        ),
        // A chain of redirects: /redirect/3 -> /redirect/2 -> ... -> /ok.
        p if p.starts_with("/redirect/") => {
            let n: u32 = p["/redirect/".len()..].parse().unwrap_or(0);
            let next = if n <= 1 {
                "/ok".to_owned()
            } else {
                format!("/redirect/{}", n - 1)
            };
            (302, format!("Location: {next}\r\n"), String::new())
        }
        // Headers at once, the body after a delay (vs /delay/: headers late).
        p if p.starts_with("/delay-body/") => {
            let ms: u64 = p["/delay-body/".len()..].parse().unwrap_or(0);
            let body = "slow body";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
            return false;
        }
        p if p.starts_with("/delay/") => {
            let ms: u64 = p["/delay/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, String::new(), "slow but fine".into())
        }
        _ => (404, String::new(), "no such path".into()),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    false
}

/// The same behaviours over HTTPS, with a certificate for `localhost` and
/// 127.0.0.1 that expires in `days` days, signed by a CA made for the test
/// (its PEM in `ca_file`, for `checker.ca_files`).
pub struct TlsTarget {
    pub addr: SocketAddr,
    pub ca_file: tempfile::NamedTempFile,
}

impl TlsTarget {
    pub async fn start(days: i64) -> TlsTarget {
        let (acceptor, ca_file) = tls_acceptor(days);
        let addr = listen_on("127.0.0.1", move |stream| {
            let acceptor = acceptor.clone();
            async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve(tls).await;
                }
            }
        })
        .await;
        TlsTarget { addr, ca_file }
    }

    /// A mail-like server that speaks `protocol` (smtp or imap) in plain
    /// text up to STARTTLS, then TLS with the same kind of certificate.
    pub async fn start_starttls(days: i64, protocol: &'static str) -> TlsTarget {
        let (acceptor, ca_file) = tls_acceptor(days);
        let addr = listen_on("127.0.0.1", move |mut stream| {
            let acceptor = acceptor.clone();
            async move {
                if plain_dialogue(&mut stream, protocol).await {
                    let _ = acceptor.accept(stream).await;
                }
            }
        })
        .await;
        TlsTarget { addr, ca_file }
    }

    /// By name, so the check resolves `localhost` (a DNS phase) and the
    /// certificate's name is verified.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

/// An acceptor with a certificate for `localhost` and 127.0.0.1 that
/// expires in `days` days, from a CA made for the test (its PEM in the file).
fn tls_acceptor(days: i64) -> (tokio_rustls::TlsAcceptor, tempfile::NamedTempFile) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let ymd = |d: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let now = chrono::Utc::now();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sitewatch test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "sitewatch test leaf");
    leaf.not_before = ymd(now - chrono::Duration::days(30));
    leaf.not_after = ymd(now + chrono::Duration::days(days));
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca_cert.pem()).unwrap();

    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    (acceptor, ca_file)
}

/// The plain-text side of STARTTLS; true when the client asked for TLS.
async fn plain_dialogue(stream: &mut TcpStream, protocol: &str) -> bool {
    let mut lines = Vec::new();
    let (greeting, steps): (&[u8], &[(&str, &[u8])]) = match protocol {
        "smtp" => (
            b"220 mail.sitewatch.test ESMTP\r\n",
            &[
                (
                    "EHLO",
                    b"250-mail.sitewatch.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
                ),
                ("STARTTLS", b"220 2.0.0 Ready to start TLS\r\n"),
            ],
        ),
        _ => (
            b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n",
            &[("a1 STARTTLS", b"a1 OK Begin TLS negotiation now\r\n")],
        ),
    };
    if stream.write_all(greeting).await.is_err() {
        return false;
    }
    for (command, answer) in steps {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            match stream.read(&mut byte).await {
                Ok(1) => line.push(byte[0]),
                _ => return false,
            }
        }
        lines.push(String::from_utf8_lossy(&line).into_owned());
        if !line.starts_with(command.as_bytes()) || stream.write_all(answer).await.is_err() {
            return false;
        }
    }
    true
}
