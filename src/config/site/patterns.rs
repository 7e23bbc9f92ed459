//! Compiling a site's regexes: bounded in size, shared between sites with
//! the same pattern when they are the config's, compiled per request when
//! they are an API caller's.

use std::sync::Arc;

use regex::Regex;

/// Compiled regexes are bounded so a pathological pattern cannot take the
/// daemon's memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Distinct patterns kept compiled for reuse across sites and reloads.
const REGEX_CACHE_MAX: usize = 10_000;

/// The lazy DFA's cache of a one-off regex (on-demand checks): a quarter of
/// the crate's 2 MiB default, so the requests a token may have in flight
/// cost little memory, and only while they run.
const ONE_OFF_DFA_LIMIT: usize = 1 << 19;

/// Whose patterns a site's regexes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patterns {
    /// The config's: compiled once and shared by every site (and reload)
    /// with the same pattern. Bounded by the config, which the operator
    /// writes.
    Shared,
    /// An API caller's (on-demand): compiled for this request only and
    /// dropped with it, so distinct patterns cannot pile up in memory.
    OneOff,
}

/// Compiles `pattern` for `use_`: a [`Patterns::Shared`] pattern is shared
/// with earlier sites of the same pattern (100,000 sites with one pattern
/// hold it once; a regex, even a clone, carries its own cache pool, which
/// grows up to 2 MiB as it is used).
pub(super) fn compile(pattern: &str, use_: Patterns) -> Result<Arc<Regex>, regex::Error> {
    if use_ == Patterns::OneOff {
        return regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(ONE_OFF_DFA_LIMIT)
            .build()
            .map(Arc::new);
    }
    type Cache = std::sync::Mutex<std::collections::HashMap<String, Arc<Regex>>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().expect("regex cache").get(pattern) {
        return Ok(re.clone());
    }
    let re = Arc::new(
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?,
    );
    let mut c = cache.lock().expect("regex cache");
    if c.len() >= REGEX_CACHE_MAX {
        c.clear();
    }
    c.insert(pattern.to_owned(), re.clone());
    Ok(re)
}
