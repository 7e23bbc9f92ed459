//! Loader tests: files, globs, environment overrides, secrets, duplicates.

use std::collections::HashMap;
use std::path::Path;

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MAIN: &str = r#"
sites_files = ["sites.d/*.toml"]
[kafka]
brokers = "k1:9092"
[[sites]]
name = "inline"
url = "https://inline.example"
"#;

#[test]
fn loads_inline_and_glob_sites_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "main.toml", MAIN);
    write(
        dir.path(),
        "sites.d/b.toml",
        "[[sites]]\nname = \"b\"\nurl = \"https://b.example\"\n",
    );
    write(
        dir.path(),
        "sites.d/a.toml",
        "[[sites]]\nname = \"a\"\nurl = \"https://a.example\"\n",
    );
    write(dir.path(), "sites.d/ignored.txt", "not toml");
    let s = load_with_env(&main, HashMap::new()).unwrap();
    let names: Vec<_> = s.sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["inline", "a", "b"]);
    assert_eq!(s.site_files.len(), 3);
    assert!(s.sites[1].source.ends_with("sites.d/a.toml"));
}

#[test]
fn environment_overrides_file_values() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "main.toml", MAIN);
    let s = load_with_env(
        &main,
        env(&[
            ("SITEWATCH__KAFKA__BROKERS", "k2:9092,k3:9092"),
            ("SITEWATCH__POSTGRES__URL", "postgres://u@db:5432/x"),
            ("SITEWATCH__CHECKER__MAX_BODY_BYTES", "4096"),
            ("SITEWATCH__KAFKA__TOPICS__DLQ", "my_dlq"),
            ("SITEWATCH__POSTGRES__PASSWORD", "pw-from-env"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(s.kafka.brokers, "k2:9092,k3:9092");
    assert_eq!(s.postgres.url, "postgres://u@db:5432/x");
    assert_eq!(s.checker.max_body_bytes, 4096);
    assert_eq!(s.kafka.topics.dlq, "my_dlq");
    assert_eq!(
        s.postgres_password.as_ref().unwrap().expose(),
        "pw-from-env"
    );
    assert!(!format!("{s:?}").contains("pw-from-env"));
    assert!(!s.summary().contains("pw-from-env"));
}

#[test]
fn unknown_environment_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "main.toml", MAIN);
    let err = load_with_env(&main, env(&[("SITEWATCH__KAFKA__BROKERZ", "x")])).unwrap_err();
    assert!(err.to_string().contains("brokerz"), "{err}");
}

#[test]
fn secrets_from_files_and_never_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pw = write(dir.path(), "sasl.pw", "sasl-secret\n");
    let main = write(
        dir.path(),
        "main.toml",
        &format!(
            "[postgres]\nurl = \"postgres://u:inline-secret@db/x\"\n\
             [kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"svc\"\npassword_file = {:?}\n",
            pw.to_str().unwrap()
        ),
    );
    let s = load_with_env(&main, HashMap::new()).unwrap();
    assert_eq!(
        s.kafka_sasl_password.as_ref().unwrap().expose(),
        "sasl-secret"
    );
    assert!(!s.summary().contains("inline-secret"));
    assert!(s.postgres_display_url().contains("REDACTED"));

    // A bad config that holds secrets does not print them.
    let bad = write(
        dir.path(),
        "bad.toml",
        "[postgres]\nurl = \"postgres://u:inline-secret@db/x\"\npool_size = 0\n\
         [kafka.sasl]\nmechanism = \"GSSAPI\"\nusername = \"svc\"\npassword = \"sasl-inline\"\n",
    );
    let err = load_with_env(&bad, HashMap::new()).unwrap_err().to_string();
    assert!(
        err.contains("postgres.pool_size") && err.contains("kafka.sasl.mechanism"),
        "{err}"
    );
    assert!(
        !err.contains("inline-secret") && !err.contains("sasl-inline"),
        "{err}"
    );
}

#[test]
fn duplicates_by_name_and_by_normalised_url() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "main.toml",
        r#"sites_files = ["more.toml"]
[[sites]]
name = "a"
url = "http://A.example:80/"
[[sites]]
name = "a"
url = "http://other.example"
"#,
    );
    write(
        dir.path(),
        "more.toml",
        "[[sites]]\nname = \"b\"\nurl = \"http://a.example#x\"\n",
    );
    let err = load_with_env(&main, HashMap::new()).unwrap_err();
    let lines: Vec<String> = err.0.iter().map(|p| p.to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("main.toml: site \"a\": field `name`: duplicate name"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("more.toml: site \"b\": field `url`"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("same target as site \"a\""),
        "{}",
        lines[1]
    );
}

#[test]
fn daemon_and_site_problems_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "main.toml",
        "[kafka]\nbrokerz = \"x\"\n[[sites]]\nname = \"a\"\nurl = \"gopher://a\"\n",
    );
    let err = load_with_env(&main, HashMap::new()).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
    assert!(err.0.iter().any(|p| p.to_string().contains("brokerz")));
    assert!(err.0.iter().any(|p| p.field.as_deref() == Some("url")));
}

#[test]
fn producer_batching_is_configurable_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let site = "[[sites]]\nname = \"a\"\nurl = \"https://a.example\"\n";
    let main = write(dir.path(), "ok.toml", site);
    let s = load_with_env(&main, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.kafka.compression, super::kafka::Compression::Lz4);
    assert_eq!(s.kafka.linger, std::time::Duration::from_millis(25));
    let tuned = format!("[kafka]\ncompression = \"none\"\nlinger = \"100ms\"\n{site}");
    let main = write(dir.path(), "tuned.toml", &tuned);
    let s = load_with_env(&main, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.kafka.compression.as_str(), "none");
    assert_eq!(s.kafka.linger, std::time::Duration::from_millis(100));
    for (bad, field) in [
        ("compression = \"zstd\"", "kafka.compression"),
        ("linger = \"2s\"", "kafka.linger"),
    ] {
        let main = write(dir.path(), "bad.toml", &format!("[kafka]\n{bad}\n{site}"));
        let err = load_with_env(&main, HashMap::new()).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].field.as_deref(), Some(field), "{err}");
    }
}

#[test]
fn site_file_with_other_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "main.toml", "sites_files = [\"s.toml\"]\n");
    write(dir.path(), "s.toml", "[kafka]\nbrokers = \"x\"\n");
    let err = load_with_env(&main, HashMap::new()).unwrap_err();
    assert!(
        err.0[0].to_string().contains("s.toml: field `kafka`"),
        "{err}"
    );
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sitewatch.example.toml");
    let s = load_with_env(&path, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.sites.len() >= 3);
    // One site of each check kind.
    let kinds: std::collections::BTreeSet<&str> = s
        .sites
        .iter()
        .filter_map(|site| crate::model::CheckKind::of_url(site.url.as_str()))
        .map(crate::model::CheckKind::as_str)
        .collect();
    assert_eq!(kinds, ["dns", "http", "tcp", "tls"].into());
}

#[test]
fn api_tokens_come_from_the_environment_as_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "[api]\nenabled = true\n").unwrap();
    let env = HashMap::from([
        (
            "SITEWATCH__API__TOKENS".to_owned(),
            "first-token-0123456789,second-token-0123456789".to_owned(),
        ),
        // Other values with commas stay strings.
        (
            "SITEWATCH__KAFKA__BROKERS".to_owned(),
            "h1:9092,h2:9092".to_owned(),
        ),
    ]);
    let s = super::load_with_env(&path, env).unwrap();
    let tokens: Vec<&str> = s.api_tokens.iter().map(|t| t.expose()).collect();
    assert_eq!(
        tokens,
        ["first-token-0123456789", "second-token-0123456789"]
    );
    assert_eq!(s.kafka.brokers, "h1:9092,h2:9092");
    let e = super::load_with_env(&path, Default::default()).unwrap_err();
    assert!(e.to_string().contains("api.tokens"), "{e}");
}

#[test]
fn empty_or_blank_api_tokens_are_refused_wherever_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[api]\nenabled = true\ntokens = [\"ok-0123456789abcdef\", \" \"]\n",
    )
    .unwrap();
    let e = super::load_with_env(&path, HashMap::new()).unwrap_err();
    assert!(e.to_string().contains("api.tokens"), "{e}");
    assert!(e.to_string().contains("empty or blank"), "{e}");

    std::fs::write(&path, "[api]\nenabled = true\n").unwrap();
    let long = "tok-0123456789abcdef";
    for value in [
        String::new(),
        format!("{long},"),
        format!(",{long}"),
        format!("{long}, ,{long}x"),
        // Too short to be a secret.
        "tok".to_owned(),
    ] {
        let env = HashMap::from([("SITEWATCH__API__TOKENS".to_owned(), value.clone())]);
        let e = super::load_with_env(&path, env).unwrap_err();
        assert!(
            e.to_string().contains("api.tokens"),
            "{value:?} was accepted: {e}"
        );
    }
    // A tokens file with no token in it (blank lines, a no-break space):
    // the API would start with no way in.
    let file = dir.path().join("tokens");
    std::fs::write(&file, "\n \u{a0}\n\n").unwrap();
    std::fs::write(
        &path,
        format!("[api]\nenabled = true\ntokens_file = {:?}\n", file),
    )
    .unwrap();
    let e = super::load_with_env(&path, HashMap::new()).unwrap_err();
    assert!(e.to_string().contains("no token"), "{e}");

    std::fs::write(&path, "[api]\nenabled = true\n").unwrap();
    let env = HashMap::from([(
        "SITEWATCH__API__TOKENS".to_owned(),
        format!("{long}a,{long}b"),
    )]);
    assert_eq!(
        super::load_with_env(&path, env).unwrap().api_tokens.len(),
        2
    );
}

#[test]
fn a_misspelt_environment_override_is_named_as_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, "[checker]\nconcurrency = 10\n").unwrap();
    let env = HashMap::from([("SITEWATCH__CHECKER__CONCURENCY".to_owned(), "5".to_owned())]);
    let e = super::load_with_env(&path, env).unwrap_err().to_string();
    assert!(e.contains("SITEWATCH__CHECKER__CONCURENCY"), "{e}");
    assert!(e.contains("checker.concurency"), "{e}");
    // A bad value from the environment names the variable too.
    let env = HashMap::from([(
        "SITEWATCH__CHECKER__CONCURRENCY".to_owned(),
        "many".to_owned(),
    )]);
    let e = super::load_with_env(&path, env).unwrap_err().to_string();
    assert!(e.contains("SITEWATCH__CHECKER__CONCURRENCY"), "{e}");
    // A misspelt key in the file does not blame the environment.
    std::fs::write(&path, "[checker]\nconcurency = 10\n").unwrap();
    let e = super::load_with_env(&path, HashMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("concurency") && !e.contains("environment"),
        "{e}"
    );
}

#[test]
fn postgres_passwords_never_reach_the_display_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    for url in [
        "postgres://u:hunter2@db:5432/sw",
        "postgres://u@db:5432/sw?password=hunter2&sslmode=require",
        "host=db user=u password=hunter2 dbname=sw",
    ] {
        std::fs::write(&path, format!("[postgres]\nurl = \"{url}\"\n")).unwrap();
        let s = super::load_with_env(&path, HashMap::new()).unwrap();
        let shown = s.postgres_display_url();
        assert!(!shown.contains("hunter2"), "{url} shown as {shown}");
        assert!(!s.summary().contains("hunter2"), "{url}");
    }
}

/// Mutated config files never panic the loader, and every problem it
/// reports names the file it is about.
#[test]
fn fuzzed_configs_load_or_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let seed = r#"
[kafka]
brokers = "k1:9092"
partitions = 3
[checker]
concurrency = 10
[[sites]]
name = "a"
url = "https://a.example/x?y=1"
interval = "30s"
timeout = "5s"
regex = "ok|fine"
expect_status = [200, "3xx"]
headers = { Authorization = "Bearer t" }
forbidden_regex = "(?i)error"
expect_headers = [{ name = "content-type", matches = "^text/" }]
min_cert_days = 7
degraded_after = "1s"
"#;
    let mut rng = crate::fuzz::Rng::new(0xc0f1);
    let path = dir.path().join("sitewatch.toml");
    let shown = path.display().to_string();
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..crate::fuzz::iterations() / 3 {
        let text = crate::fuzz::mutate(&mut rng, seed.as_bytes());
        std::fs::write(&path, &text).unwrap();
        match load_with_env(&path, HashMap::new()) {
            Ok(_) => ok += 1,
            Err(errors) => {
                refused += 1;
                for p in &errors.0 {
                    assert!(p.to_string().starts_with(&shown), "{p}");
                }
            }
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}

#[test]
fn dns_servers_are_ip_with_an_optional_port() {
    use std::net::SocketAddr;
    let parsed = |s| super::parse_dns_server(s);
    assert_eq!(
        parsed("10.0.0.2"),
        Some(SocketAddr::from(([10, 0, 0, 2], 53)))
    );
    assert_eq!(
        parsed("127.0.0.1:5353"),
        Some(SocketAddr::from(([127, 0, 0, 1], 5353)))
    );
    assert_eq!(parsed("[::1]:5353"), "[::1]:5353".parse().ok());
    assert_eq!(parsed("::1"), "[::1]:53".parse().ok());
    assert_eq!(parsed("dns.example:53"), None);
    assert_eq!(parsed("127.0.0.1:0"), None);
    assert_eq!(parsed("[127.0.0.1]"), None);
    assert_eq!(parsed("[::1"), None);
    assert_eq!(parsed("[::1]"), "[::1]:53".parse().ok());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[checker]\ndns_servers = [\"127.0.0.1:5353\", \"dns.example\"]\n",
    )
    .unwrap();
    let e = super::load_with_env(&path, HashMap::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("checker.dns_servers[1]"), "{e}");
    assert!(e.contains("dns.example"), "{e}");
    assert!(!e.contains("dns_servers[0]"), "{e}");
}

#[test]
fn a_backfill_limit_shorter_than_five_minutes_of_the_shortest_interval_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "main.toml", MAIN);
    let env_of = |limit: &str, min: &str| {
        env(&[
            ("SITEWATCH__SCHEDULER__BACKFILL_LIMIT", limit),
            ("SITEWATCH__SCHEDULER__MIN_INTERVAL", min),
        ])
    };
    let err = load_with_env(&main, env_of("59", "5s"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scheduler.backfill_limit") && err.contains("at least 60"),
        "{err}"
    );
    load_with_env(&main, env_of("60", "5s")).unwrap();
    load_with_env(&main, env_of("3000", "100ms")).unwrap();
}
