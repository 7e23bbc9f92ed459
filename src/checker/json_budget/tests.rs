//! The bound's promise, as a property: on any document, a query never does
//! more work than [`Shape::cost`] says, counted by a reference evaluator of
//! the RFC 9535 subset generated here (which must agree with
//! serde_json_path on what is selected); and the attack of the kind that
//! froze the daemon is refused.

use proptest::prelude::*;
use serde_json::{json, Value};
use serde_json_path::JsonPath;

use super::*;

/// A generated query: segments of selectors, filters with embedded
/// relative queries (existence, or `== 1`).
#[derive(Debug, Clone)]
enum Sel {
    Name(&'static str),
    Index(usize),
    Wild,
    Filter(Box<Q>, bool),
}

#[derive(Debug, Clone)]
struct Q {
    segs: Vec<(bool, Vec<Sel>)>,
}

impl Q {
    fn text(&self, root: char) -> String {
        let mut t = root.to_string();
        for (desc, sels) in &self.segs {
            t.push_str(if *desc { "..[" } else { "[" });
            let parts: Vec<String> = sels
                .iter()
                .map(|s| match s {
                    Sel::Name(n) => format!("'{n}'"),
                    Sel::Index(i) => i.to_string(),
                    Sel::Wild => "*".into(),
                    Sel::Filter(q, cmp) => {
                        format!("?{}{}", q.text('@'), if *cmp { " == 1" } else { "" })
                    }
                })
                .collect();
            t.push_str(&parts.join(", "));
            t.push(']');
        }
        t
    }

    /// Evaluates from `input`, counting visits the way the bound does.
    fn eval<'a>(&self, input: Vec<&'a Value>, visits: &mut f64) -> Vec<&'a Value> {
        let mut list = input;
        for (desc, sels) in &self.segs {
            if *desc {
                let mut all = Vec::new();
                for v in &list {
                    let mut stack = vec![*v];
                    while let Some(n) = stack.pop() {
                        *visits += 1.0;
                        all.push(n);
                        stack.extend(children(n).into_iter().rev());
                    }
                }
                list = all;
            }
            let mut out = Vec::new();
            for v in &list {
                let kids = children(v);
                for s in sels {
                    match s {
                        Sel::Name(n) => {
                            *visits += 1.0;
                            out.extend(v.get(*n));
                        }
                        Sel::Index(i) => {
                            *visits += 1.0;
                            out.extend(v.as_array().and_then(|a| a.get(*i)));
                        }
                        Sel::Wild => {
                            *visits += kids.len() as f64;
                            out.extend(kids.iter().copied());
                        }
                        Sel::Filter(q, cmp) => {
                            for k in &kids {
                                *visits += 1.0;
                                let got = q.eval(vec![*k], visits);
                                let keep = if *cmp {
                                    got.len() == 1 && got[0] == &json!(1)
                                } else {
                                    !got.is_empty()
                                };
                                if keep {
                                    out.push(*k);
                                }
                            }
                        }
                    }
                }
            }
            list = out;
        }
        list
    }

    /// Comparisons need a singular query (names and indexes only).
    fn singular(&self) -> bool {
        self.segs
            .iter()
            .all(|(d, s)| !d && s.len() == 1 && matches!(s[0], Sel::Name(_) | Sel::Index(_)))
    }
}

fn children(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        _ => Vec::new(),
    }
}

fn any_query(depth: u32) -> impl Strategy<Value = Q> {
    let leaf = prop_oneof![
        prop_oneof![Just("a"), Just("b")].prop_map(Sel::Name),
        (0usize..3).prop_map(Sel::Index),
        Just(Sel::Wild),
    ];
    let sel = leaf.prop_recursive(depth, 8, 2, |inner| {
        prop_oneof![
            inner.clone(),
            (
                proptest::collection::vec(
                    (any::<bool>(), proptest::collection::vec(inner, 1..3)),
                    1..3
                ),
                any::<bool>()
            )
                .prop_map(|(segs, cmp)| {
                    let q = Q { segs };
                    let cmp = cmp && q.singular();
                    Sel::Filter(Box::new(q), cmp)
                }),
        ]
    });
    proptest::collection::vec((any::<bool>(), proptest::collection::vec(sel, 1..3)), 1..4)
        .prop_map(|segs| Q { segs })
}

fn any_doc() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!(1)),
        Just(json!(2)),
        Just(json!("x")),
        Just(Value::Null)
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            (
                proptest::option::of(inner.clone()),
                proptest::option::of(inner)
            )
                .prop_map(|(a, b)| {
                    let mut o = serde_json::Map::new();
                    if let Some(a) = a {
                        o.insert("a".into(), a);
                    }
                    if let Some(b) = b {
                        o.insert("b".into(), b);
                    }
                    Value::Object(o)
                }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("SITEWATCH_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn no_query_does_more_work_than_its_bound(q in any_query(3), doc in any_doc()) {
        let text = q.text('$');
        let path = JsonPath::parse(&text).expect("generated queries are valid");
        let mut visits = 0.0;
        let got = q.eval(vec![&doc], &mut visits);
        // The reference evaluator is right about what is selected...
        prop_assert_eq!(got.len(), path.query(&doc).all().len(), "{}", text);
        // ...and the bound holds for its work.
        let bound = Shape::of(&text).cost(&Stats::of(&doc));
        prop_assert!(visits <= bound, "{text}: {visits} visits, bound {bound}");
    }
}

/// Arrays nested `levels` deep, `width` items a level (one of them the next
/// level): the 3 KB body is 100 levels of 10.
fn nested(levels: usize, width: usize) -> Value {
    let mut v = json!([]);
    for _ in 0..levels {
        let mut items: Vec<Value> = (0..width - 1).map(|i| json!(i)).collect();
        items.push(v);
        v = Value::Array(items);
    }
    v
}

#[test]
fn nested_descendant_filters_are_refused_and_linear_queries_pass() {
    let doc = nested(100, 10);
    let bytes = doc.to_string().len();
    assert!(bytes < 4096, "{bytes}");
    let s = Stats::of(&doc);
    let bomb = Shape::of("$..[?@..[?@..[?@..[?@..[?@ == 99999]]]]]");
    assert!(bomb.cost(&s) > 1e3 * s.budget(), "{}", bomb.cost(&s));
    // Two levels are still within reach of this small body.
    assert!(Shape::of("$..[?@..[?@ == 9]]").cost(&s) <= s.budget());

    // A large, wide document: the common queries pass.
    let wide = json!({"items": (0..20_000).map(|i| json!({"id": i, "status": "ok",
        "tags": ["a", "b"], "price": i % 50})).collect::<Vec<_>>()});
    let s = Stats::of(&wide);
    for q in [
        "$.items[*].status",
        "$..status",
        "$.items[?@.price < 10]",
        "$..[?@.status == 'down']",
        "$.items[?@.tags[?@ == 'a']]",
        "$..tags[*]",
        "$.items[0:100].id",
    ] {
        let cost = Shape::of(q).cost(&s);
        assert!(cost <= s.budget(), "{q}: {cost} > {}", s.budget());
    }
}

/// Found by review: a cost the first bound missed.
#[test]
fn whole_document_comparisons_are_counted() {
    let wide = Value::Array((0..100_000).map(|i| json!(i)).collect());
    let s = Stats::of(&wide);
    // The whole document compared with itself for each of 10^5 items.
    let cost = Shape::of("$[?$ == $]").cost(&s);
    assert!(cost > 1e3 * s.budget(), "{cost}");
    // One compared with a literal stays cheap.
    assert!(Shape::of("$[?@ == 5]").cost(&s) <= s.budget());
}
