//! Regular expressions on what a server sends, with bounded cost.
//!
//! The `regex` crate promises linear time, but its constant is the size of
//! the automaton: a 1 MiB body and `(?s).{0,500}Q.{0,500}$` took 6.5 s of
//! CPU (measured, release build). Here a pattern runs as a lazy DFA that
//! gives up when its cache thrashes (regex-automata's `hybrid`, the engine
//! `regex` itself uses first), which costs a few passes over the input at
//! most; when it gives up (or meets a Unicode word boundary on non-ASCII
//! input), the PikeVM finishes the search only if its worst case, the
//! automaton's states times the input's bytes, is within
//! [`PIKEVM_BUDGET`]. Past it the assertion fails as too costly.

use regex_automata::hybrid::{self, regex::Regex};
use regex_automata::nfa::thompson::{self, pikevm::PikeVM};
use regex_automata::util::syntax;
use regex_automata::{Input, MatchErrorKind};

/// NFA states times input bytes the PikeVM may take: measured at ~0.7 ns
/// each in the worst case, about a third of a second of one core.
const PIKEVM_BUDGET: u64 = 500_000_000;
/// Bytes the lazy DFA must search per state it builds, once it has filled
/// its cache three times, or it gives up (to the bounded PikeVM).
const MIN_BYTES_PER_STATE: usize = 64;
/// The lazy DFA's cache: as the `regex` crate's default.
const DFA_CACHE_BYTES: usize = 2 << 20;

/// A compiled pattern: matching is `Err` when it would cost too much.
pub struct Pattern {
    text: String,
    engine: Engine,
}

enum Engine {
    Bounded(Box<Bounded>),
    /// A large alternation of plain literals, which the `regex` crate (and
    /// so config validation) runs as Aho-Corasick without any automaton of
    /// states: linear, and too large for [`Engine::Bounded`]'s limit.
    Literals(regex::bytes::Regex),
}

struct Bounded {
    dfa: Regex,
    vm: PikeVM,
    states: u64,
}

/// A search that was not run: its worst case exceeds the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooCostly {
    pub states: u64,
    pub bytes: u64,
}

impl std::fmt::Display for TooCostly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not evaluated: too costly on these {} bytes (a pattern of {} states could take \
             {:.1e} steps, and the limit is {:.1e})",
            self.bytes,
            self.states,
            (self.states * self.bytes) as f64,
            PIKEVM_BUDGET as f64
        )
    }
}

impl Pattern {
    /// `pattern` with `regex`'s syntax on bytes, its automaton at most
    /// `size_limit` bytes.
    pub fn new(pattern: &str, size_limit: usize) -> Result<Pattern, String> {
        let syntax = syntax::Config::new().utf8(false);
        let nfa = thompson::Config::new()
            .utf8(false)
            .nfa_size_limit(Some(size_limit));
        let bad = |e: &dyn std::error::Error| match e.source() {
            Some(why) => format!("bad regex: {e}: {why}"),
            None => format!("bad regex: {e}"),
        };
        let vm = match PikeVM::builder()
            .syntax(syntax)
            .thompson(nfa.clone())
            .build(pattern)
        {
            Ok(vm) => vm,
            // Accepted by the `regex` crate within the same limit only as
            // literals, never as an automaton: see `Engine::Literals`.
            Err(e) => {
                let literals = regex_syntax::ParserBuilder::new()
                    .utf8(false)
                    .build()
                    .parse(pattern)
                    .is_ok_and(|hir| hir.properties().is_alternation_literal());
                if !literals {
                    return Err(bad(&e));
                }
                return match regex::bytes::RegexBuilder::new(pattern)
                    .size_limit(size_limit)
                    .build()
                {
                    Ok(literals) => Ok(Pattern {
                        text: pattern.to_owned(),
                        engine: Engine::Literals(literals),
                    }),
                    Err(_) => Err(bad(&e)),
                };
            }
        };
        let dfa = Regex::builder()
            .syntax(syntax)
            .thompson(nfa)
            .dfa(
                hybrid::dfa::Config::new()
                    .cache_capacity(DFA_CACHE_BYTES)
                    .skip_cache_capacity_check(true)
                    .minimum_cache_clear_count(Some(3))
                    // `regex` uses 10; a pattern whose every new state costs
                    // thousands of NFA states can build one per 25 bytes for
                    // ever without tripping that (found by review).
                    .minimum_bytes_per_state(Some(MIN_BYTES_PER_STATE))
                    .unicode_word_boundary(true),
            )
            .build(pattern)
            .map_err(|e| bad(&e))?;
        Ok(Pattern {
            text: pattern.to_owned(),
            engine: Engine::Bounded(Box::new(Bounded {
                states: vm.get_nfa().states().len() as u64,
                dfa,
                vm,
            })),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does `haystack` match anywhere?
    pub fn is_match(&self, haystack: &[u8]) -> Result<bool, TooCostly> {
        self.find(haystack).map(|m| m.is_some())
    }

    /// The leftmost-first match in `haystack`, as a byte range.
    pub fn find(&self, haystack: &[u8]) -> Result<Option<std::ops::Range<usize>>, TooCostly> {
        let (dfa, vm, states) = match &self.engine {
            Engine::Bounded(b) => (&b.dfa, &b.vm, b.states),
            Engine::Literals(re) => return Ok(re.find(haystack).map(|m| m.range())),
        };
        let input = Input::new(haystack);
        let mut cache = dfa.create_cache();
        match dfa.try_search(&mut cache, &input) {
            Ok(m) => return Ok(m.map(|m| m.range())),
            Err(e)
                if matches!(
                    e.kind(),
                    MatchErrorKind::GaveUp { .. } | MatchErrorKind::Quit { .. }
                ) => {}
            // Other errors are for anchored or partial searches, not made here.
            Err(_) => {}
        }
        let bytes = haystack.len() as u64;
        if states.saturating_mul(bytes) > PIKEVM_BUDGET {
            return Err(TooCostly { states, bytes });
        }
        let mut cache = vm.create_cache();
        Ok(vm.find(&mut cache, input).map(|m| m.range()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_the_regex_crate_does() {
        for (p, hay, want) in [
            ("welcome", &b"a welcome page"[..], Some(2..9)),
            ("(?i)ERROR", b"an error", Some(3..8)),
            (r"\bOK\b", "état OK".as_bytes(), Some(6..8)),
            (r"\w+é", "xé".as_bytes(), Some(0..3)),
            ("(?-u)\\xff", b"a\xffb", Some(1..2)),
            ("^$", b"x", None),
        ] {
            let got = Pattern::new(p, 1 << 20).unwrap().find(hay).unwrap();
            let re = regex::bytes::Regex::new(p).unwrap();
            assert_eq!(got, re.find(hay).map(|m| m.range()), "{p}");
            assert_eq!(got, want, "{p}");
        }
        assert!(Pattern::new("(", 1 << 20).is_err_and(|e| e.starts_with("bad regex")));
        // Found by review: 6,000 literals pass config validation (the
        // `regex` crate runs them as Aho-Corasick), so they run here too.
        let words: Vec<String> = (0..6000).map(|i| format!("literalword{i:05}xyz")).collect();
        let p = Pattern::new(&words.join("|"), 1 << 20).unwrap();
        assert!(regex::bytes::RegexBuilder::new(&words.join("|"))
            .size_limit(1 << 20)
            .build()
            .is_ok());
        assert_eq!(p.find(b"a literalword05999xyz").unwrap(), Some(2..21));
        assert_eq!(p.find(b"nothing").unwrap(), None);
    }

    #[test]
    fn a_lazy_dfa_that_keeps_building_states_gives_up() {
        // A new state every 25 bytes, each of thousands of NFA states.
        let p = Pattern::new("Q(?:x*[QR]){5000}Z", 1 << 20).unwrap();
        let mut hay = Vec::with_capacity(1 << 20);
        let mut seed = 7u32;
        while hay.len() < 1 << 20 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            hay.push(if seed >> 16 & 1 == 0 { b'Q' } else { b'R' });
            hay.extend_from_slice(&[b'x'; 24]);
        }
        let e = p.find(&hay).unwrap_err();
        assert!(e.to_string().contains("too costly"), "{e}");
    }

    #[test]
    fn a_costly_search_is_refused_not_run() {
        // A Unicode word boundary on non-ASCII input leaves the lazy DFA;
        // a large automaton on a large input is then too costly.
        let p = Pattern::new(r"(?s)\b.{0,200}Q.{0,200}\b", 1 << 20).unwrap();
        let hay = "é ".repeat(400_000);
        let e = p.find(hay.as_bytes()).unwrap_err();
        assert!(
            e.to_string().starts_with("not evaluated: too costly"),
            "{e}"
        );
        // The same pattern on a small input runs.
        assert_eq!(p.find("é Q é".as_bytes()), Ok(Some(0..7)));
    }
}
