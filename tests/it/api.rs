//! The public API against a running daemon: on-demand checks answered
//! within `wait` and fetched later by id, sites and results, the OpenAPI
//! document kept true, tokens, limits and refused private targets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sitewatch::api::{outcomes, PublicApi};
use sitewatch::bus::Publisher;
use sitewatch::config::{Secret, Settings};
use sitewatch::daemon;
use tokio_util::sync::CancellationToken;

use crate::support::{free_addr, no_reloads, wait_for, TestConfig, TestDb};
use crate::target::Target;

const TOKEN: &str = "test-token-0123456789";

struct Api {
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let mut rb = self.http.request(
            method.parse().unwrap(),
            format!("http://{}{path}", self.addr),
        );
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).unwrap());
        }
        let r = rb.send().await.unwrap();
        let code = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (code, body, location)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (c, b, _) = self.call("GET", path, None, Some(TOKEN)).await;
        (c, b)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value, Option<String>) {
        self.call("POST", path, Some(body), Some(TOKEN)).await
    }
}

fn with_api(mut s: Settings, allow_private: bool) -> Settings {
    s.api.enabled = true;
    s.api.listen = free_addr();
    s.api.allow_private_targets = allow_private;
    s.api_tokens = vec![Secret::new(TOKEN)];
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_checks_sites_results_and_openapi() {
    let target = Target::start().await;
    let db = TestDb::create().await;
    let cfg = TestConfig::new(
        &db,
        &format!(
            "[[sites]]\nname = \"shop\"\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
            target.url("/ok?shop")
        ),
    );
    let settings = with_api(cfg.load(), true);
    let api = Api::new(settings.api.listen);
    let admin = cfg.admin;
    let stop = CancellationToken::new();
    let running = tokio::spawn(daemon::run(settings, &[], stop.clone(), no_reloads()));
    let http = reqwest::Client::new();
    wait_for("the daemon ready", Duration::from_secs(60), || async {
        http.get(format!("http://{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // Within `wait`: the outcome itself.
    let (code, body, _) = api
        .post(
            "/v1/checks?wait=20s",
            json!({"url": target.url("/ok?od"), "regex": "o"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outcome"]["outcome"], "up", "{body}");
    assert_eq!(body["outcome"]["origin"], "on_demand", "{body}");
    let id = body["check_id"].as_str().unwrap().to_owned();
    // ... and later, from Postgres, by id.
    wait_for(
        "the on-demand result persisted",
        Duration::from_secs(30),
        || async { api.get(&format!("/v1/checks/{id}")).await.0 == 200 },
    )
    .await;
    let (_, got) = api.get(&format!("/v1/checks/{id}")).await;
    assert_eq!(got["result"]["outcome"], "up", "{got}");
    assert_eq!(got["result"]["origin"], "on_demand", "{got}");
    // Stored under its own key, never under a configured site's name: an
    // on-demand check of `http://shop/` (which fails: no such host) leaves
    // the site `shop` alone.
    let (code, body, _) = api
        .post(
            "/v1/checks?wait=20s",
            json!({"url": "http://shop/", "timeout": "2s"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["outcome"]["site"], "on-demand:shop", "{body}");
    assert_ne!(body["outcome"]["outcome"], "up", "{body}");
    let bad = body["check_id"].as_str().unwrap().to_owned();
    wait_for(
        "the failed on-demand result persisted",
        Duration::from_secs(30),
        || async { api.get(&format!("/v1/checks/{bad}")).await.0 == 200 },
    )
    .await;
    let client = db.client().await;
    let shop_rows = crate::support::count(
        &client,
        "SELECT count(*) FROM check_results WHERE site = 'shop' AND origin = 'on_demand'",
    )
    .await;
    assert_eq!(
        shop_rows, 0,
        "an on-demand result stored under a site's name"
    );
    // A scheduled check by its id: time-leading (migration V17), so the
    // lookup goes to the slot's partition.
    wait_for("a scheduled result", Duration::from_secs(30), || async {
        crate::support::count(
            &client,
            "SELECT count(*) FROM check_results WHERE origin = 'scheduled'",
        )
        .await
            > 0
    })
    .await;
    let row = client
        .query_one(
            "SELECT check_id, scheduled_at FROM check_results WHERE origin = 'scheduled' LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (sched, at): (uuid::Uuid, chrono::DateTime<chrono::Utc>) = (row.get(0), row.get(1));
    assert_eq!(sitewatch::model::slot_of(sched), Some(at));
    let (code, got) = api.get(&format!("/v1/checks/{sched}")).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["result"]["check_id"], sched.to_string(), "{got}");
    assert_eq!(got["result"]["origin"], "scheduled", "{got}");
    let gauge = |sql: &'static str| crate::support::count(&client, sql);
    wait_for(
        "shop up in site_status",
        Duration::from_secs(30),
        || async {
            gauge("SELECT count(*) FROM site_status WHERE site = 'shop' AND outcome = 'up'").await
                == 1
        },
    )
    .await;

    // Without `wait`: 202 and a Location that later holds the result.
    let (code, body, location) = api
        .post("/v1/checks", json!({"url": target.url("/500")}))
        .await;
    assert_eq!(code, 202, "{body}");
    let location = location.expect("a Location header");
    wait_for("the queued result", Duration::from_secs(30), || async {
        api.get(&location).await.0 == 200
    })
    .await;
    assert_eq!(api.get(&location).await.1["result"]["status_code"], 500);

    // Validation names the field; tokens are required.
    let (code, body, _) = api
        .post("/v1/checks", json!({"url": "ftp://x", "regex": "("}))
        .await;
    assert_eq!(code, 400);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"url") && fields.contains(&"regex"),
        "{body}"
    );
    let (code, _, _) = api
        .call(
            "POST",
            "/v1/checks",
            Some(json!({"url": target.url("/ok")})),
            None,
        )
        .await;
    assert_eq!(code, 401);
    let (code, _, _) = api.call("GET", "/v1/sites", None, Some("wrong")).await;
    assert_eq!(code, 401);

    // Sites and results.
    wait_for("results of shop", Duration::from_secs(30), || async {
        api.get("/v1/sites/shop/results?limit=2")
            .await
            .1
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    let (_, sites) = api.get("/v1/sites").await;
    assert!(
        sites
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["site"] == "shop"),
        "{sites}"
    );
    let (code, site) = api.get("/v1/sites/shop").await;
    assert_eq!(code, 200);
    assert_eq!(site["uptime"].as_array().unwrap().len(), 3, "{site}");
    assert_eq!(api.get("/v1/sites/nope").await.0, 404);

    // Every path of the OpenAPI document answers (placeholders filled in).
    let (code, doc) = api.get("/v1/openapi.json").await;
    assert_eq!(code, 200);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", &id).replace("{name}", "shop");
        for method in ops.as_object().unwrap().keys() {
            let body = (method == "post").then(|| json!({"url": target.url("/ok")}));
            let (code, _, _) = api
                .call(&method.to_uppercase(), &concrete, body, Some(TOKEN))
                .await;
            assert!(
                (200..300).contains(&code),
                "{method} {concrete} answered {code}"
            );
        }
    }
    stream(&api, &target).await;
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// The WebSocket: live outcomes of a subscribed site, and an on-demand
/// check's outcome pushed to the socket that asked.
async fn stream(api: &Api, target: &Target) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let url = format!("ws://{}/v1/stream", api.addr);
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(refused.is_err(), "a socket without a token is refused");
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    ws.send(Message::Text(
        json!({"subscribe": {"sites": ["shop"]}}).to_string().into(),
    ))
    .await
    .unwrap();
    let mut shop = 0;
    let mut subscribed = false;
    while shop < 2 {
        let m = read(&mut ws).await;
        if m.get("subscribed").is_some() {
            subscribed = true;
        } else if m["outcome"]["site"] == "shop" {
            shop += 1;
        }
    }
    assert!(subscribed);

    ws.send(Message::Text(
        json!({"check": {"url": target.url("/ok?ws")}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut id = None;
    loop {
        let m = read(&mut ws).await;
        if let Some(q) = m.get("queued") {
            id = Some(q["check_id"].clone());
        } else if id.is_some() && m["outcome"]["check_id"] == *id.as_ref().unwrap() {
            assert_eq!(m["outcome"]["outcome"], "up", "{m}");
            assert_eq!(m["outcome"]["origin"], "on_demand", "{m}");
            break;
        }
    }
}

async fn read(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures::StreamExt;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn private_targets_are_refused_and_limits_hold() {
    let db = TestDb::create().await;
    let cfg = TestConfig::new(&db, "");
    let mut settings = with_api(cfg.load(), false);
    settings.api.requests_per_minute = 4;
    let addr = settings.api.listen;
    let pool = sitewatch::store::pool(&settings).unwrap();
    let publisher = Publisher::new(&settings).unwrap();
    let app = PublicApi {
        settings: Arc::new(settings),
        pool,
        publisher,
        outcomes: outcomes::channel(),
    }
    .router();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let api = Api::new(addr);
    for url in [
        "http://127.0.0.1:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/",
    ] {
        let (code, body, _) = api.post("/v1/checks", json!({ "url": url })).await;
        assert_eq!(code, 400, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "url", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("not a public address"),
            "{body}"
        );
    }
    // A body over `api.max_body_bytes` (16 KiB) is refused.
    let (code, _, _) = api
        .post("/v1/checks", json!({ "url": "x".repeat(64 * 1024) }))
        .await;
    assert_eq!(code, 413);
    // Four requests a minute: the fifth is refused.
    let (code, body) = api.get("/v1/openapi.json").await;
    assert_eq!(code, 429, "{body}");
}

#[tokio::test]
async fn public_only_checks_never_connect_to_private_addresses() {
    use sitewatch::checker::HttpChecker;
    use sitewatch::config::CheckerSettings;
    use sitewatch::model::Outcome;

    let target = Target::start().await;
    let http = HttpChecker::new(&CheckerSettings::default(), "t").unwrap();
    let by_ip = target.url("/ok");
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    for url in [&by_ip, &by_name] {
        let mut req = crate::support::request("x", chrono::Utc::now(), url);
        assert_eq!(http.check(&req).await.outcome, Outcome::Up, "{url}");
        req.public_only = true;
        let out = http.check(&req).await;
        assert_eq!(out.outcome, Outcome::Down, "{url}");
        let msg = out.error_message.unwrap_or_default();
        assert!(msg.contains("public"), "{url}: {msg}");
    }
}
