use proptest::prelude::*;
use serde_json::json;

use super::*;

const ISSUE: &str = r#"{"text": "{{ summary }}", "detail": "{{ detail }}"}"#;

fn event(summary: &str, detail: &str) -> serde_json::Value {
    json!({"summary": summary, "detail": detail, "site": "shop", "n": 3,
           "incident": {"id": 7, "cause": detail}})
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a server put in the cause, a JSON channel's body is JSON
    /// and carries it unchanged.
    #[test]
    fn any_value_renders_as_valid_json(summary in any::<String>(), detail in any::<String>()) {
        let body = render(ISSUE, &event(&summary, &detail), true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| TestCaseError::fail(format!("{e}: {body:?}")))?;
        prop_assert_eq!(v["text"].as_str(), Some(summary.as_str()));
        prop_assert_eq!(v["detail"].as_str(), Some(detail.as_str()));
    }
}

#[test]
fn values_print_as_their_json_forms_and_plain_text_is_left_alone() {
    let e = event("a \"quoted\" \\ line\nnext\u{1}", "d");
    let body = render(
        r#"{"s": "{{ summary }}", "i": {{ incident }}, "n": {{ n }}, "j": {{ summary|tojson }}}"#,
        &e,
        true,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["s"], e["summary"]);
    assert_eq!(v["j"], e["summary"]);
    assert_eq!(v["i"]["id"], 7);
    assert_eq!(v["n"], 3);
    // Not JSON: as it is.
    let text = render("{{ summary }}", &e, false).unwrap();
    assert_eq!(text, "a \"quoted\" \\ line\nnext\u{1}");
}

#[test]
fn what_could_grow_without_bound_is_refused_before_it_runs() {
    // The doubling found by review: each level binds twice the last.
    let mut doubling = "{{ v0 | length }}".to_owned();
    for k in 0..40 {
        let from = if k == 39 {
            "incident.cause".to_owned()
        } else {
            format!("v{}", k + 1)
        };
        doubling = format!("{{% for v{k} in [{from} ~ {from}] %}}{doubling}{{% endfor %}}");
    }
    for (t, why) in [
        (r#"{{ "x" * 1000000000 }}"#, "`*`"),
        (r#"{{ summary ** 2 }}"#, "`*`"),
        (
            r#"{"text": "{{ ({'a': {'b': 'x'}}.a.b * 99999999) | length }}"}"#,
            "`*`",
        ),
        (r#"{{ detail ~ detail }}"#, "`~`"),
        (r#"{{ (detail + detail) | length }}"#, "`+`"),
        (r#"{% set x = detail %}{{ x }}"#, "`set`"),
        (r#"{%- with x = 1 %}{% endwith %}"#, "`with`"),
        (r#"{% macro m() %}{% endmacro %}"#, "`macro`"),
        (r#"{% filter upper %}x{% endfilter %}"#, "`filter`"),
        (r#"{% for c in detail %}{% endfor %}"#, "`for`"),
        (&doubling, "`~`"),
        (&doubling.replace(" ~ ", ", "), "`for`"),
        (
            r#"{% if (1, '%}') %}{% for x in y %}{% endfor %}{% endif %}"#,
            "`for`",
        ),
        // Found by review: a raw block's text imitating its end tag.
        (
            r#"{% raw %}endraw{{ '{% endraw %}{{ summary * 9 }}' }}"#,
            "`raw`",
        ),
    ] {
        let e = render(t, &event("s", "d"), true).unwrap_err();
        assert!(e.contains(why), "{t}: {e}");
    }
    // What looks like an operator inside a string, a comment, plain text or
    // whitespace control is not one.
    for t in [
        r#"{"s": "{{ "*~+" }}{{ summary }}"}"#,
        r#"{# {% set x = 1 %} #}{"a": 1}"#,
        "{%+ if summary -%} x {%- endif +%}{{- summary -}}",
        "* plain text ~ + *",
    ] {
        assert_eq!(unbounded(t), None, "{t}");
    }
    // Filters and functions outside the list are unknown.
    for t in [
        r#"{{ detail|replace("a", "bbbbbbbb") }}"#,
        r#"{{ detail|join(detail) }}"#,
        r#"{{ range(10) }}"#,
        r#"{{ "%999999999s"|format(detail) }}"#,
    ] {
        assert!(render(t, &event("s", "d"), true).is_err(), "{t}");
    }
}

#[test]
fn values_and_output_are_capped() {
    let big = "%".repeat(10 * 1024);
    // Each urlencode triples a `%`: refused before the value passes 256 KiB.
    let chain = format!("{{{{ detail{} }}}}", "|urlencode".repeat(30));
    let e = render(&chain, &event("s", &big), false).unwrap_err();
    assert!(
        e.contains("`urlencode`") && e.contains("more than 262144 bytes"),
        "{e}"
    );
    // The body stops at its cap.
    let e = render(&"{{ detail }}".repeat(30), &event("s", &big), false).unwrap_err();
    assert!(e.contains("more than 262144 bytes"), "{e}");
}

#[test]
fn json_content_types() {
    for (t, json) in [
        ("application/json", true),
        ("application/json; charset=utf-8", true),
        ("application/vnd.pagerduty+json", true),
        ("text/plain", false),
        ("application/x-www-form-urlencoded", false),
    ] {
        assert_eq!(is_json(t), json, "{t}");
    }
}
