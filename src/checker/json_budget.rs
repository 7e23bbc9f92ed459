//! What a JSONPath query may cost on a body, bounded before it runs.
//!
//! RFC 9535 queries can cost far more than their text and body suggest: a
//! filter evaluates its embedded queries once per candidate, so filters
//! nested under descendant segments multiply (`$..[?@..[?@..[?…]]]` on a
//! 3 KB body is ~10^13 node visits). serde_json_path has no budget of its
//! own, so the query's structure is read here (the path has already parsed,
//! so this reads only its shape) and its cost on this body is bounded from
//! above: node lists are tracked as bags (a length, and how many times one
//! node may appear), a descendant segment multiplies a node's appearances
//! by the depth at most, and a filter's embedded queries run over all its
//! candidates at once. A query whose bound exceeds the budget is refused on
//! that body; linear queries (each node visited a few times) always pass.

use serde_json::Value;

/// Node visits a query may cost at most, beyond [`VISITS_PER_NODE`] per
/// node of the body: about a fifth of a second of one core (serde_json_path
/// visits ~10 million nodes a second, measured in a release build).
const BASE_VISITS: f64 = 2_000_000.0;
/// Node visits allowed per node of the body: any query that visits each
/// node a bounded number of times passes, however large the body.
const VISITS_PER_NODE: f64 = 8.0;

/// A query's shape: what it costs depends on nothing else.
#[derive(Debug)]
pub struct Shape {
    absolute: bool,
    segments: Vec<Segment>,
}

#[derive(Debug)]
struct Segment {
    descendant: bool,
    selectors: Vec<Selector>,
}

#[derive(Debug)]
enum Selector {
    /// A name or an index: at most one child.
    One,
    /// A wildcard or a slice: every child.
    Many,
    /// Every child, each judged by the expression.
    Filter(Expr),
}

#[derive(Debug, Default)]
struct Expr {
    queries: Vec<Shape>,
}

/// The sizes of a document that bound a query's cost.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    nodes: f64,
    depth: f64,
    fanout: f64,
}

impl Stats {
    /// The sizes of `doc`.
    pub fn of(doc: &Value) -> Stats {
        let (mut nodes, mut depth, mut fanout) = (0usize, 0usize, 0usize);
        let mut stack = vec![(doc, 1usize)];
        while let Some((v, d)) = stack.pop() {
            nodes += 1;
            depth = depth.max(d);
            match v {
                Value::Array(a) => {
                    fanout = fanout.max(a.len());
                    stack.extend(a.iter().map(|c| (c, d + 1)));
                }
                Value::Object(o) => {
                    fanout = fanout.max(o.len());
                    stack.extend(o.values().map(|c| (c, d + 1)));
                }
                _ => {}
            }
        }
        Stats {
            nodes: nodes as f64,
            depth: depth as f64,
            fanout: fanout.max(1) as f64,
        }
    }

    /// The most node visits a query may cost on this document.
    pub fn budget(&self) -> f64 {
        BASE_VISITS + VISITS_PER_NODE * self.nodes
    }

    pub fn nodes(&self) -> usize {
        self.nodes as usize
    }
}

/// A node list's size: `len` nodes, none more than `mult` times.
#[derive(Debug, Clone, Copy)]
struct Bag {
    len: f64,
    mult: f64,
}

impl Bag {
    const ROOT: Bag = Bag {
        len: 1.0,
        mult: 1.0,
    };

    fn clip(self, s: &Stats) -> Bag {
        let mult = self.mult.min(self.len);
        Bag {
            len: self.len.min(mult * s.nodes),
            mult,
        }
    }

    /// Nodes in the subtrees of the bag's nodes, with repeats.
    fn subtrees(self, s: &Stats) -> f64 {
        (self.len * s.nodes).min(self.mult * s.nodes * s.depth)
    }
}

impl Shape {
    /// The shape of `path`, which must be a valid RFC 9535 query.
    pub fn of(path: &str) -> Shape {
        let mut scan = Scan {
            s: path.as_bytes(),
            i: 0,
        };
        scan.query()
    }

    /// An upper bound of the node visits this query costs on a document of
    /// sizes `s`.
    pub fn cost(&self, s: &Stats) -> f64 {
        self.run(Bag::ROOT, s).0
    }

    /// The values in the subtrees of what the query selects, with repeats:
    /// what serialising every selected value costs (a `matches`).
    pub fn selected_size(&self, s: &Stats) -> f64 {
        self.run(Bag::ROOT, s).1.subtrees(s)
    }

    /// The work of this query from the nodes of `start`, and its result.
    fn run(&self, start: Bag, s: &Stats) -> (f64, Bag) {
        let mut bag = start;
        let mut work = 0.0;
        for seg in &self.segments {
            let input = if seg.descendant {
                let len = bag.subtrees(s);
                work += len;
                // A node appears once per appearance of each ancestor.
                Bag {
                    len,
                    mult: (bag.mult * s.depth).min(bag.len),
                }
                .clip(s)
            } else {
                bag
            };
            // Every node has one parent: children repeat as their parents do.
            let children = Bag {
                len: input.len * s.fanout,
                mult: input.mult,
            }
            .clip(s);
            let mut out = Bag {
                len: 0.0,
                mult: 0.0,
            };
            for sel in &seg.selectors {
                let (visited, got) = match sel {
                    Selector::One => (input.len, input),
                    Selector::Many => (children.len, children),
                    Selector::Filter(e) => (children.len + e.cost(children, s), children),
                };
                work += visited;
                out.len += got.len;
                out.mult += got.mult;
            }
            bag = out.clip(s);
        }
        (work, bag)
    }
}

impl Expr {
    /// The work of this expression on every node of `candidates`.
    fn cost(&self, candidates: Bag, s: &Stats) -> f64 {
        let mut work = 0.0;
        for q in &self.queries {
            let (w, got) = if q.absolute {
                let (w, got) = q.run(Bag::ROOT, s);
                (w * candidates.len, got)
            } else {
                q.run(candidates, s)
            };
            work += w;
            // Comparing two queries' values walks them (a literal is
            // compared at once), an absolute one's once per candidate.
            if self.queries.len() > 1 {
                let times = if q.absolute { candidates.len } else { 1.0 };
                work += times * got.subtrees(s);
            }
        }
        work
    }
}

/// A reader of a valid query's shape.
struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at(&self, text: &str) -> bool {
        self.s[self.i..].starts_with(text.as_bytes())
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// At `$` or `@`.
    fn query(&mut self) -> Shape {
        let absolute = self.peek() == Some(b'$');
        self.i += 1;
        let mut segments = Vec::new();
        loop {
            let before = self.i;
            self.blanks();
            let descendant = self.at("..");
            if descendant {
                self.i += 2;
            } else if self.at(".") {
                self.i += 1;
            } else if !self.at("[") {
                self.i = before;
                break;
            }
            let selectors = self.member_or_bracket();
            segments.push(Segment {
                descendant,
                selectors,
            });
        }
        Shape { absolute, segments }
    }

    /// `*`, a member name, or a bracketed selection.
    fn member_or_bracket(&mut self) -> Vec<Selector> {
        match self.peek() {
            Some(b'[') => self.bracketed(),
            Some(b'*') => {
                self.i += 1;
                vec![Selector::Many]
            }
            _ => {
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
                {
                    self.i += 1;
                }
                vec![Selector::One]
            }
        }
    }

    fn bracketed(&mut self) -> Vec<Selector> {
        self.i += 1;
        let mut selectors = Vec::new();
        loop {
            self.blanks();
            let Some(c) = self.peek() else { break };
            let selector = match c {
                b'\'' | b'"' => {
                    self.string();
                    Selector::One
                }
                b'*' => {
                    self.i += 1;
                    Selector::Many
                }
                b'?' => {
                    self.i += 1;
                    Selector::Filter(self.expr())
                }
                _ => {
                    let start = self.i;
                    while self.peek().is_some_and(|c| !matches!(c, b',' | b']')) {
                        self.i += 1;
                    }
                    if self.s[start..self.i].contains(&b':') {
                        Selector::Many
                    } else {
                        Selector::One
                    }
                }
            };
            selectors.push(selector);
            self.blanks();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                // Not a valid query: what was read is the bound.
                _ => break,
            }
        }
        selectors
    }

    /// A filter's logical expression, up to the end of its selector.
    fn expr(&mut self) -> Expr {
        let mut e = Expr::default();
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            match c {
                b'\'' | b'"' => self.string(),
                b'(' => {
                    depth += 1;
                    self.i += 1;
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    self.i += 1;
                }
                b',' | b']' if depth == 0 => break,
                b'@' | b'$' => e.queries.push(self.query()),
                c if c.is_ascii_alphabetic() => {
                    while self
                        .peek()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                    {
                        self.i += 1;
                    }
                }
                _ => self.i += 1,
            }
        }
        e
    }

    /// Past a quoted string literal, escapes included.
    fn string(&mut self) {
        let quote = self.s[self.i];
        self.i += 1;
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == b'\\' {
                self.i += 1;
            } else if c == quote {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
