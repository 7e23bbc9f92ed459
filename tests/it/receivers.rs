//! Local stand-ins for the vendors' endpoints (the real ones are on the
//! internet): one HTTP server that keeps every request and answers each
//! path as its vendor documents, and an SMTP server (aiosmtpd, started from
//! the virtualenv `scripts/install-deps` makes) with TLS and AUTH.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// False when the receiver answered 5xx on purpose (see
    /// [`Vendors::fail_for`]).
    pub accepted: bool,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} sent a body that is not JSON: {e}", self.path))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone, Default)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    /// Path prefix → answer 500 until then.
    failing: Arc<Mutex<HashMap<String, Instant>>>,
}

/// The HTTP vendors' receiver.
pub struct Vendors {
    pub addr: SocketAddr,
    shared: Shared,
}

impl Vendors {
    pub async fn start() -> Vendors {
        let shared = Shared::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Vendors { addr, shared }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests under `prefix` get a 500 for `d` from now.
    pub fn fail_for(&self, prefix: &str, d: Duration) {
        self.shared
            .failing
            .lock()
            .unwrap()
            .insert(prefix.to_owned(), Instant::now() + d);
    }

    /// Every request under `prefix` so far, in arrival order.
    pub fn under(&self, prefix: &str) -> Vec<Received> {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The accepted ones only.
    pub fn accepted(&self, prefix: &str) -> Vec<Received> {
        self.under(prefix)
            .into_iter()
            .filter(|r| r.accepted)
            .collect()
    }
}

async fn answer(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let failing = shared
        .failing
        .lock()
        .unwrap()
        .iter()
        .any(|(p, until)| path.starts_with(p.as_str()) && Instant::now() < *until);
    let body = body.to_vec();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.log.lock().unwrap().push(Received {
        path: path.clone(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
        accepted: !failing && method == Method::POST,
    });
    if failing {
        return (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose").into_response();
    }
    // The success answers each vendor documents.
    if path.starts_with("/echo") {
        // A hostile or careless server: refuses, echoing the request's path
        // (a webhook URL's token) plainly and JSON-escaped, across the point
        // where the sender cuts what it keeps.
        let body = format!(
            "{}{path} {}",
            "x".repeat(500),
            serde_json::to_string(&path).unwrap().replace('/', "\\/")
        );
        (StatusCode::UNAUTHORIZED, body).into_response()
    } else if path.starts_with("/pagerduty") {
        let key = parsed["dedup_key"].clone();
        let body = json!({"status": "success", "message": "Event processed", "dedup_key": key});
        (StatusCode::ACCEPTED, axum::Json(body)).into_response()
    } else if path.starts_with("/opsgenie") {
        let body = json!({"result": "Request will be processed", "took": 0.01,
                          "requestId": "0b6e4c1a-test"});
        (StatusCode::ACCEPTED, axum::Json(body)).into_response()
    } else if let Some(rest) = path.strip_prefix("/telegram/bot") {
        // A wrong token is refused the way Telegram does, echoing nothing
        // of it; the sender must not leak it either way.
        if rest.starts_with(crate::alerts::BOT_TOKEN) {
            let body =
                json!({"ok": true, "result": {"message_id": 1, "chat": {"id": parsed["chat_id"]}}});
            axum::Json(body).into_response()
        } else {
            let body = json!({"ok": false, "error_code": 401,
                              "description": format!("Unauthorized: bad token in {path}")});
            (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
        }
    } else if path.starts_with("/discord") {
        StatusCode::NO_CONTENT.into_response()
    } else if path.starts_with("/teams") {
        StatusCode::ACCEPTED.into_response()
    } else if path.starts_with("/ntfy") {
        let body = json!({"id": "x1", "time": 0, "event": "message", "topic": parsed["topic"]});
        axum::Json(body).into_response()
    } else {
        "ok".into_response()
    }
}

/// One message the SMTP receiver accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mail {
    /// The AUTH login, if the client authenticated.
    pub user: Option<String>,
    /// Whether the session was encrypted when the message came.
    pub tls: bool,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The whole message (headers and body) as sent.
    pub data: String,
}

/// aiosmtpd on loopback; killed when dropped.
pub struct Smtp {
    pub port: u16,
    child: Child,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl Smtp {
    /// `mode`: `starttls` or `tls` (implicit). `cert`/`key`: PEM files.
    pub fn start(mode: &str, cert: &Path, key: &Path, user: &str, password: &str) -> Smtp {
        let python = std::env::var("SITEWATCH_TEST_PYTHON")
            .unwrap_or_else(|_| format!("{}/.local/share/sitewatch/py/bin/python", env!("HOME")));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp/receiver.py");
        let port = crate::support::free_addr().port();
        let mut child = Command::new(&python)
            .args([script, &port.to_string()])
            .arg(cert)
            .arg(key)
            .args([mode, user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {python} (run scripts/install-deps for aiosmtpd): {e}")
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "ready", "the SMTP receiver did not start");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = mails.clone();
        std::thread::spawn(move || collect(lines, sink));
        Smtp { port, child, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn collect(lines: BufReader<ChildStdout>, sink: Arc<Mutex<Vec<Mail>>>) {
    for line in lines.lines().map_while(Result::ok) {
        let mail: Mail = serde_json::from_str(&line).expect("a JSON line per mail");
        sink.lock().unwrap().push(mail);
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, written as PEM into
/// `dir`: returns (ca, cert, key) paths.
pub fn loopback_certificate(
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let issuer = Issuer::new(ca, ca_key);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
