//! Unit tests of site parsing.

use super::*;
use crate::model::IpFamily;

fn parse(text: &str) -> Result<Site, Vec<Problem>> {
    let table: toml::Table = toml::from_str(text).unwrap();
    parse_site(
        table,
        0,
        &Arc::from(Path::new("t.toml")),
        &SiteDefaults::default(),
        Duration::from_secs(5),
        Patterns::Shared,
    )
}

fn fields(problems: &[Problem]) -> Vec<&str> {
    problems.iter().filter_map(|p| p.field.as_deref()).collect()
}

#[test]
fn status_set_text_round_trips() {
    let set: StatusSet = "200, 301-302,5xx".parse().unwrap();
    assert_eq!(set.to_string(), "200,301-302,500-599");
    assert_eq!(set.to_string().parse::<StatusSet>().unwrap(), set);
    assert!(set.contains(301) && set.contains(599) && !set.contains(404));
    assert!("".parse::<StatusSet>().is_err());
    assert!("2000".parse::<StatusSet>().is_err());
}

#[test]
fn minimal_site_gets_defaults() {
    let s = parse("name = \"a\"\nurl = \"https://a.example\"").unwrap();
    assert_eq!(s.interval, Duration::from_secs(60));
    assert_eq!(s.timeout, Duration::from_secs(10));
    assert_eq!(s.method, Method::GET);
    assert!(s.expect_status.contains(301) && !s.expect_status.contains(404));
    assert!(s.enabled && !s.reuse_connection);
}

#[test]
fn full_site() {
    let s = parse(
        r#"name = "shop"
           url = "https://shop.example/health"
           interval = "30s"
           timeout = "5s"
           regex = "ok|healthy"
           method = "head"
           headers = { Authorization = "Bearer t0ken", "X-Probe" = "1" }
           expect_status = [200, "300-302", "4xx"]
           enabled = false
           reuse_connection = true"#,
    )
    .unwrap();
    assert_eq!(s.method, Method::HEAD);
    assert!(s.regex.unwrap().is_match("all healthy"));
    assert_eq!(s.headers.len(), 2);
    assert!(!format!("{:?}", s.headers).contains("t0ken"));
    assert_eq!(s.expect_status.to_string(), "200,300-302,400-499");
    assert!(!s.enabled && s.reuse_connection);
}

#[test]
fn every_bad_field_is_reported() {
    let problems = parse(
        r#"name = "x"
           url = "ftp://x.example"
           interval = "1s"
           timeout = "fast"
           regex = "("
           method = "GE T"
           expect_status = [999]
           colour = "blue""#,
    )
    .unwrap_err();
    assert_eq!(
        fields(&problems),
        [
            "url",
            "interval",
            "timeout",
            "regex",
            "method",
            "expect_status",
            "colour"
        ]
    );
    assert!(problems
        .iter()
        .all(|p| p.site == Some(SiteRef::Named("x".into()))));
}

#[test]
fn rich_site() {
    let s = parse(
        r#"name = "shop"
           url = "https://shop.example/"
           timeout = "5s"
           forbidden_regex = "(?i)error"
           degraded_after = "1500ms"
           expect_headers = [
               { name = "Content-Type", matches = "^text/html" },
               { name = "x-debug", absent = true },
           ]
           body_min_bytes = 10
           body_max_bytes = 100000
           min_cert_days = 14
           follow_redirects = false
           max_redirects = 3
           body = "{}"
           verify_tls = false
           ip_family = "prefer_ipv6""#,
    )
    .unwrap();
    let o = s.options.expect("options");
    assert_eq!(o.forbidden_regex.as_deref(), Some("(?i)error"));
    assert_eq!(o.degraded_after_ms, Some(1500));
    assert_eq!(o.expect_headers.len(), 2);
    assert_eq!(o.expect_headers[0].name, "content-type");
    assert!(o.expect_headers[1].absent);
    assert_eq!(
        (o.body_min_bytes, o.body_max_bytes),
        (Some(10), Some(100_000))
    );
    assert_eq!(o.min_cert_days, Some(14));
    assert!(!o.follow_redirects && !o.verify_tls);
    assert_eq!(o.max_redirects, Some(3));
    assert_eq!(o.ip_family, IpFamily::PreferIpv6);
    // A plain site carries no options at all.
    let plain = parse("name = \"a\"\nurl = \"https://a.example\"").unwrap();
    assert!(plain.options.is_none());
}

#[test]
fn bad_rich_fields_are_each_named() {
    let p = parse(
        r#"name = "x"
           url = "http://x.example"
           timeout = "2s"
           forbidden_regex = "("
           degraded_after = "2s"
           expect_headers = [{ name = "a b" }, { matches = "x" }, { name = "c", colour = 1 }]
           body_min_bytes = 5
           body_max_bytes = 4
           min_cert_days = 7
           max_redirects = -1
           verify_tls = "no"
           ip_family = "v4""#,
    )
    .unwrap_err();
    assert_eq!(
        fields(&p),
        [
            "forbidden_regex",
            "degraded_after",
            "expect_headers[0]",
            "expect_headers[1]",
            "expect_headers[2]",
            "body_min_bytes",
            "min_cert_days",
            "max_redirects",
            "verify_tls",
            "ip_family"
        ]
    );
}

#[test]
fn timeout_must_be_shorter_than_interval() {
    let p =
        parse("name = \"a\"\nurl = \"http://a.example\"\ninterval = \"10s\"\ntimeout = \"10s\"")
            .unwrap_err();
    assert_eq!(fields(&p), ["timeout"]);
    // The default timeout (10s) against a short interval names its origin.
    let p = parse("name = \"a\"\nurl = \"http://a.example\"\ninterval = \"5s\"").unwrap_err();
    assert!(p[0].message.contains("site_defaults"), "{}", p[0].message);
}

#[test]
fn nameless_site_is_named_by_position() {
    let p = parse("url = \"http://a.example\"").unwrap_err();
    assert_eq!(p[0].site, Some(SiteRef::Index(0)));
    assert_eq!(fields(&p), ["name"]);
    let p = parse("name = \"has space\"\nurl = \"http://a.example\"").unwrap_err();
    assert_eq!(p[0].site, Some(SiteRef::Index(0)));
}

#[test]
fn bad_header_value_is_not_echoed() {
    let p = parse("name = \"a\"\nurl = \"http://a.example\"\nheaders = { Authorization = \"Bearer se\\ncret\" }")
        .unwrap_err();
    assert_eq!(fields(&p), ["headers.Authorization"]);
    assert!(!p[0].to_string().contains("cret"));
}

#[test]
fn json_assertions_parse_and_each_bad_one_is_named() {
    use crate::model::JsonExpect;
    let s = parse(
        r#"name = "api"
           url = "https://api.example/health"
           json = [
               { path = "$.status", equals = "ok" },
               { path = "$.items.length()", at_least = 1 },
               { path = "$.version", matches = "^2\\." },
               { path = "$.error", absent = true },
           ]"#,
    )
    .unwrap();
    let o = s.options.expect("options");
    assert_eq!(o.json.len(), 4);
    assert_eq!(o.json[0].expect, JsonExpect::Equals("ok".into()));
    assert_eq!(o.json[1].query(), ("$.items", true));
    assert_eq!(o.json[1].expect, JsonExpect::AtLeast(1.0));
    assert_eq!(o.json[2].expect, JsonExpect::Matches("^2\\.".into()));

    let p = parse(
        r#"name = "api"
           url = "https://api.example/health"
           json = [
               { path = "$.[", present = true },
               { path = "$.a", equals = 1, at_most = 2 },
               { path = "$.a" },
               { path = "$.a", at_least = "one" },
               { path = "$.a", present = false },
               { path = "$.a", matches = "(" },
               { equals = 1 },
           ]"#,
    )
    .unwrap_err();
    assert_eq!(
        fields(&p),
        ["json[0]", "json[1]", "json[2]", "json[3]", "json[4]", "json[5]", "json[6]"]
    );
    let text = p
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("RFC 9535"), "{text}");
    assert!(text.contains("one expectation per entry"), "{text}");
}

#[test]
fn options_that_do_not_fit_the_kind_are_refused() {
    let tcp = parse(
        r#"name = "smtp"
           url = "tcp://mail.example:25"
           send = "EHLO sitewatch\r\n"
           expect = "^220 "
           degraded_after = "1s""#,
    )
    .unwrap();
    let o = tcp.options.expect("options");
    assert_eq!(o.send.as_deref(), Some("EHLO sitewatch\r\n"));
    assert_eq!(o.expect.as_deref(), Some("^220 "));
    let p = parse(
        r#"name = "smtp"
           url = "tcp://mail.example:25"
           regex = "ok"
           json = [{ path = "$.a", present = true }]
           expect = "(""#,
    )
    .unwrap_err();
    assert_eq!(fields(&p), ["regex", "json", "expect"]);
    assert!(
        p[0].to_string().contains("does not apply to tcp checks"),
        "{}",
        p[0]
    );
    let p = parse("name = \"w\"\nurl = \"https://w.example\"\nsend = \"x\"").unwrap_err();
    assert_eq!(fields(&p), ["send"]);
    assert!(
        p[0].to_string().contains("does not apply to http checks"),
        "{}",
        p[0]
    );
}

#[test]
fn dns_sites_take_expected_answers_and_rcode() {
    let s = parse(
        r#"name = "mx"
           url = "dns://10.0.0.2/example.com?type=MX"
           expect_answer = ["10 mail.example.com."]
           expect_rcode = "noerror""#,
    )
    .unwrap();
    let o = s.options.expect("options");
    assert_eq!(o.expect_answer, ["10 mail.example.com."]);
    assert_eq!(o.expect_rcode.as_deref(), Some("NOERROR"));
    let p = parse(
        r#"name = "mx"
           url = "dns:///example.com"
           expect_rcode = "GONE"
           regex = "x"
           send = "y"
           degraded_after = "1s""#,
    )
    .unwrap_err();
    assert_eq!(
        fields(&p),
        ["regex", "send", "degraded_after", "expect_rcode"]
    );
}

#[test]
fn tls_sites_take_starttls_server_name_and_min_cert_days() {
    let s = parse(
        r#"name = "smtp-tls"
           url = "tls://mail.example:587"
           starttls = "SMTP"
           server_name = "mx.example"
           min_cert_days = 14"#,
    )
    .unwrap();
    let o = s.options.expect("options");
    assert_eq!(o.starttls.as_deref(), Some("smtp"));
    assert_eq!(o.server_name.as_deref(), Some("mx.example"));
    assert_eq!(o.min_cert_days, Some(14));
    let p = parse(
        r#"name = "smtp-tls"
           url = "tls://mail.example:587"
           starttls = "pop3"
           regex = "x""#,
    )
    .unwrap_err();
    assert_eq!(fields(&p), ["regex", "starttls"]);
    let p = parse("name = \"w\"\nurl = \"https://w.example\"\nstarttls = \"smtp\"").unwrap_err();
    assert_eq!(fields(&p), ["starttls"]);
}
