//! JSON assertions on a response body: RFC 9535 JSONPath queries
//! (serde_json_path, which passes the JSONPath compliance test suite), each
//! with one expectation. A failure names the path, what was expected and
//! what came; a body that is not JSON is one failure that says so.

use std::sync::Arc;

use serde_json::Value;
use serde_json_path::JsonPath;

use super::json_budget::{Shape, Stats};
use super::pattern::{Pattern, TooCostly};
use crate::model::{Failure, JsonExpect, JsonRule, LazySecrets};

/// Characters of a value shown in a failure.
const SHOWN: usize = 120;

/// A [`JsonRule`] ready to run.
pub struct JsonCheck {
    /// As written, for messages.
    text: String,
    path: JsonPath,
    /// What the query may cost, bounded before it runs on a body.
    shape: Shape,
    length: bool,
    expect: JsonExpect,
    regex: Option<Arc<Pattern>>,
}

/// Compiles `rule`, its `matches` pattern through `regex` (the checker's
/// cache); the error says what is wrong with its path or regex.
pub fn compile(
    rule: &JsonRule,
    regex: impl Fn(&str) -> Result<Arc<Pattern>, String>,
) -> Result<JsonCheck, String> {
    if let Some(why) = rule.too_complex() {
        return Err(format!(
            "{:?}…: {why}",
            rule.path.chars().take(40).collect::<String>()
        ));
    }
    let (query, length) = rule.query();
    let path = JsonPath::parse(query)
        .map_err(|e| format!("{:?} is not an RFC 9535 JSONPath: {e}", rule.path))?;
    let regex = match &rule.expect {
        JsonExpect::Matches(p) => Some(regex(p).map_err(|e| format!("`matches`: {e}"))?),
        _ => None,
    };
    Ok(JsonCheck {
        text: rule.path.clone(),
        path,
        shape: Shape::of(query),
        length,
        expect: rule.expect.clone(),
        regex,
    })
}

/// Every failed check of `checks` on `body`. `truncated`: the body was cut
/// at `checker.max_body_bytes`, which the message of a parse error names.
pub fn evaluate(
    checks: &[JsonCheck],
    body: &[u8],
    truncated: bool,
    secrets: &LazySecrets,
) -> Vec<Failure> {
    let doc: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let cut = if truncated {
                format!(" (the body was cut at {} bytes)", body.len())
            } else {
                String::new()
            };
            return vec![Failure {
                assertion: "json".into(),
                expected: "a JSON body".into(),
                observed: format!("not JSON: {e}{cut}"),
            }];
        }
    };
    let stats = Stats::of(&doc);
    checks
        .iter()
        .filter_map(|c| c.run(&doc, &stats, secrets))
        .collect()
}

impl JsonCheck {
    fn run(&self, doc: &Value, stats: &Stats, secrets: &LazySecrets) -> Option<Failure> {
        let shown = |v: &Value| shown(v, secrets);
        let fail = |observed: String| {
            Some(Failure {
                assertion: format!("json {}", self.text),
                expected: self.expected(),
                observed,
            })
        };
        let mut cost = self.shape.cost(stats);
        if matches!(self.expect, JsonExpect::Matches(_)) {
            // Each selected value that is not a string is matched as JSON text.
            cost += self.shape.selected_size(stats);
        }
        if cost > stats.budget() {
            return fail(format!(
                "not evaluated: too costly on this body ({} JSON values): the query could \
                 visit up to {cost:.1e} of them, and the limit is {:.1e}",
                stats.nodes(),
                stats.budget()
            ));
        }
        let nodes = self.path.query(doc).all();
        match self.expect {
            JsonExpect::Present(_) => {
                return if nodes.is_empty() {
                    fail("nothing selected".into())
                } else {
                    None
                };
            }
            JsonExpect::Absent(_) => {
                return match nodes.first() {
                    Some(v) => fail(shown(v)),
                    None => None,
                };
            }
            _ => {}
        }
        if nodes.is_empty() {
            return fail("nothing selected".into());
        }
        for node in nodes {
            let value = if self.length {
                match length(node) {
                    Some(n) => std::borrow::Cow::Owned(Value::from(n)),
                    None => return fail(format!("{} (it has no length)", shown(node))),
                }
            } else {
                std::borrow::Cow::Borrowed(node)
            };
            match self.holds(&value) {
                Ok(true) => {}
                Ok(false) => return fail(shown(&value)),
                Err(costly) => return fail(costly.to_string()),
            }
        }
        None
    }

    fn holds(&self, v: &Value) -> Result<bool, TooCostly> {
        let number = v.as_f64();
        Ok(match &self.expect {
            JsonExpect::Equals(want) => same(v, want),
            JsonExpect::NotEquals(want) => !same(v, want),
            JsonExpect::AtLeast(n) => number.is_some_and(|x| x >= *n),
            JsonExpect::AtMost(n) => number.is_some_and(|x| x <= *n),
            JsonExpect::GreaterThan(n) => number.is_some_and(|x| x > *n),
            JsonExpect::LessThan(n) => number.is_some_and(|x| x < *n),
            JsonExpect::Matches(_) => {
                let text = match v {
                    Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                    other => std::borrow::Cow::Owned(other.to_string()),
                };
                match &self.regex {
                    Some(re) => re.is_match(text.as_bytes())?,
                    None => false,
                }
            }
            JsonExpect::Present(_) | JsonExpect::Absent(_) => true,
        })
    }

    fn expected(&self) -> String {
        match &self.expect {
            JsonExpect::Equals(v) => format!("== {v}"),
            JsonExpect::NotEquals(v) => format!("!= {v}"),
            JsonExpect::AtLeast(n) => format!(">= {n}"),
            JsonExpect::AtMost(n) => format!("<= {n}"),
            JsonExpect::GreaterThan(n) => format!("> {n}"),
            JsonExpect::LessThan(n) => format!("< {n}"),
            JsonExpect::Matches(p) => format!("matching {p:?}"),
            JsonExpect::Present(_) => "present".into(),
            JsonExpect::Absent(_) => "absent".into(),
        }
    }
}

/// JSON equality, but numbers by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// RFC 9535 section 2.4.4: characters of a string, elements of an array,
/// members of an object; nothing for other values.
fn length(v: &Value) -> Option<usize> {
    match v {
        Value::String(s) => Some(s.chars().count()),
        Value::Array(a) => Some(a.len()),
        Value::Object(o) => Some(o.len()),
        _ => None,
    }
}

/// A value as JSON text, cut for messages (the site's secrets hidden as
/// seen around the cut).
fn shown(v: &Value, secrets: &LazySecrets) -> String {
    let text = v.to_string();
    let cut = text
        .char_indices()
        .nth(SHOWN)
        .map_or(text.len(), |(i, _)| i);
    secrets.excerpt(text.as_bytes(), 0, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regex compiled afresh, as the checker's cache would.
    fn fresh(p: &str) -> Result<Arc<Pattern>, String> {
        Pattern::new(p, 1 << 20).map(Arc::new)
    }

    fn rule(path: &str, expect: JsonExpect) -> JsonCheck {
        compile(
            &JsonRule {
                path: path.into(),
                expect,
            },
            fresh,
        )
        .unwrap()
    }

    const BODY: &[u8] = r#"{"status": "ok", "version": "2.4.1", "items": [{"n": 1}, {"n": 2.0}],
        "load": 0.5, "name": "héllo"}"#
        .as_bytes();

    #[test]
    fn every_kind_of_assertion_passes_and_fails() {
        use JsonExpect::*;
        let passing = [
            rule("$.status", Equals("ok".into())),
            rule("$.status", NotEquals("down".into())),
            rule("$.items[1].n", Equals(2.into())),
            rule("$.items.length()", AtLeast(2.0)),
            rule("$.name.length()", Equals(5.into())),
            rule("$.load", LessThan(1.0)),
            rule("$.load", GreaterThan(0.1)),
            rule("$.items[*].n", AtMost(2.0)),
            rule("$.version", Matches(r"^2\.".into())),
            rule("$.items[?@.n > 1]", Present(true)),
            rule("$.error", Absent(true)),
        ];
        assert!(evaluate(&passing, BODY, false, &LazySecrets::none()).is_empty());
        let failing = [
            rule("$.status", Equals("down".into())),
            rule("$.items.length()", AtLeast(3.0)),
            rule("$.status", GreaterThan(1.0)),
            rule("$.version", Matches(r"^3\.".into())),
            rule("$.error", Present(true)),
            rule("$.status", Absent(true)),
            rule("$.load.length()", Equals(1.into())),
        ];
        let f = evaluate(&failing, BODY, false, &LazySecrets::none());
        assert_eq!(f.len(), failing.len(), "{f:?}");
        assert_eq!(f[0].assertion, "json $.status");
        assert_eq!(f[0].expected, "== \"down\"");
        assert_eq!(f[0].observed, "\"ok\"");
        assert_eq!(f[1].expected, ">= 3");
        assert_eq!(f[1].observed, "2");
        assert_eq!(f[4].observed, "nothing selected");
        assert!(f[6].observed.contains("no length"), "{:?}", f[6]);
    }

    #[test]
    fn a_body_that_is_not_json_is_one_clear_failure() {
        let checks = [rule("$.status", JsonExpect::Equals("ok".into()))];
        let f = evaluate(&checks, b"<html>down</html>", false, &LazySecrets::none());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].assertion, "json");
        assert!(f[0].observed.starts_with("not JSON"), "{:?}", f[0]);
        let f = evaluate(&checks, br#"{"status": "o"#, true, &LazySecrets::none());
        assert!(f[0].observed.contains("cut at 13 bytes"), "{:?}", f[0]);
    }

    #[test]
    fn a_bad_path_or_regex_is_named() {
        let e = compile(
            &JsonRule {
                path: "$.[".into(),
                expect: JsonExpect::Present(true),
            },
            fresh,
        )
        .err()
        .unwrap();
        assert!(e.contains("RFC 9535") && e.contains("$.["), "{e}");
        let e = compile(
            &JsonRule {
                path: "$.a".into(),
                expect: JsonExpect::Matches("(".into()),
            },
            fresh,
        )
        .err()
        .unwrap();
        assert!(e.contains("matches"), "{e}");
        // match()/search() compile their pattern per value: refused.
        for path in ["$[?match(@.a, 'x.*')]", "$..[?search(@, \"y\")]"] {
            let e = compile(
                &JsonRule {
                    path: path.into(),
                    expect: JsonExpect::Present(true),
                },
                fresh,
            )
            .err()
            .unwrap();
            assert!(e.contains("not supported"), "{e}");
        }
        // The word inside a string is only a string.
        assert!(compile(
            &JsonRule {
                path: "$[?@.f == 'match(x)']".into(),
                expect: JsonExpect::Present(true),
            },
            fresh
        )
        .is_ok());
        // Deep nesting is refused before the (recursive) parser sees it.
        let deep = format!("$[?{}@{}]", "(".repeat(3200), ")".repeat(3200));
        let e = compile(
            &JsonRule {
                path: deep,
                expect: JsonExpect::Present(true),
            },
            fresh,
        )
        .err()
        .unwrap();
        assert!(e.contains("at most"), "{e}");
        let nested = format!("$[?{}@{}]", "(".repeat(20), ")".repeat(20));
        assert!(compile(
            &JsonRule {
                path: nested,
                expect: JsonExpect::Present(true),
            },
            fresh
        )
        .is_ok());
    }
}
