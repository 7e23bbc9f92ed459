//! The Grafana dashboard's queries run against the real schema: a renamed
//! column or view fails here, not on a user's screen.

use sitewatch::store;

use crate::support::{slot_outcomes, TestConfig, TestDb};

/// Grafana's macros, replaced as Grafana would for "last day, site a".
fn expand(sql: &str) -> String {
    let mut out = sql.replace("${site:sqlstring}", "'a'");
    while let Some(at) = out.find("$__timeFilter(") {
        let rest = &out[at + "$__timeFilter(".len()..];
        let close = rest.find(')').expect("macro closes");
        let column = rest[..close].to_owned();
        out.replace_range(
            at..at + "$__timeFilter(".len() + close + 1,
            &format!("{column} > now() - interval '1 day'"),
        );
    }
    assert!(!out.contains('$'), "unexpanded macro in {out}");
    out
}

#[tokio::test]
async fn every_dashboard_query_runs_against_the_schema() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    store::migrate(&mut client).await.unwrap();
    let cfg = TestConfig::new(
        &db,
        "[[sites]]\nname = \"a\"\nurl = \"https://a.example/\"\n",
    );
    store::sync_sites(&mut client, &cfg.load().sites)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let rows: Vec<_> = (1..30)
        .map(|m| {
            let (_, mut up) = slot_outcomes(
                "a",
                now - chrono::Duration::minutes(m),
                "https://a.example/",
            );
            up.response_time_ms = Some(m as f64);
            if m % 5 == 0 {
                up.outcome = sitewatch::model::Outcome::Down;
                up.status_code = Some(500);
            }
            up
        })
        .collect();
    store::insert_results(&client, &rows).await.unwrap();
    client
        .execute(
            "INSERT INTO incidents (site, opened_at, cause, first_failing_check,
                                    last_failing_check, failures)
             VALUES ('a', now() - interval '5 minutes', 'unexpected_status', $1, $1, 2)",
            &[&rows[0].check_id],
        )
        .await
        .unwrap();

    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/sitewatch.json"),
    )
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries: Vec<(String, String)> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["rawSql"].as_str().unwrap().to_owned()))
        })
        .collect();
    for v in dash["templating"]["list"].as_array().unwrap() {
        queries.push((
            format!("variable {}", v["name"]),
            v["query"].as_str().unwrap().into(),
        ));
    }
    assert!(queries.len() >= 9, "{} queries", queries.len());
    for (title, sql) in &queries {
        let rows = client
            .query(&expand(sql), &[])
            .await
            .unwrap_or_else(|e| panic!("panel {title:?}: {e}\n{sql}"));
        assert!(!rows.is_empty(), "panel {title:?} shows nothing for site a");
    }
}
