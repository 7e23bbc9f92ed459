//! Webhook body templates (minijinja), bounded before they run.
//!
//! A template is written by the config's author, but what it renders comes
//! from a server (a `Location`, a banner, an error page in the cause). So:
//! - **Values are escaped for the body's type.** When the channel sends
//!   JSON, a string value prints JSON-escaped (without its quotes, so
//!   `"{{ detail }}"` is a valid JSON string whatever the detail holds);
//!   lists and maps print as JSON.
//! - **Memory and time are bounded before anything allocates.** Fuel bounds
//!   the instructions; the output goes to a writer that stops at
//!   [`MAX_BODY`]; each filter refuses an input or a result over that size;
//!   and what builds values without such a check is refused when the
//!   config loads: the `*`, `~` and `+` operators, every statement that
//!   binds or accumulates (`for`, `set`, `with`, macros, filter blocks), and
//!   every filter, test and function but a listed few (no `replace`,
//!   `indent`, `format`, `join`, `range`). What is left cannot make a value
//!   larger than the data and the capped filters give it.
//! - **Validation renders a hostile sample** (quotes, backslashes, control
//!   characters, 10 KiB values) for every event, and refuses a template
//!   that fails or, for a JSON channel, renders something that is not JSON.

use std::io::Write as _;

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Output, State, UndefinedBehavior};

/// minijinja's instruction budget for one render: a template that loops
/// past it fails instead of holding a thread.
const FUEL: u64 = 200_000;
/// The largest body a template may render.
pub const MAX_BODY: usize = 256 * 1024;

/// Statements a template may use: none binds or accumulates a value
/// (`for` binds its variable to any expression, `[v ~ v]` included, so
/// nested loops double a value per level), and none hides text from this
/// reader (`raw` ends only at its own end tag, which text inside it can
/// imitate).
const STATEMENTS: &[&str] = &["if", "elif", "else", "endif"];

/// Operators that build a larger value than their operands: repetition,
/// and concatenation (chained in one expression, its result grows with the
/// template's length).
const OPERATORS: &[(u8, &str)] = &[
    (b'*', "the `*` operator (it repeats a string or list)"),
    (b'~', "the `~` operator (concatenation)"),
    (b'+', "the `+` operator (it concatenates strings and lists)"),
];

/// Why a template cannot be bounded, or `None`. Reads tags as minijinja's
/// lexer does: a tag ends at its closing delimiter outside strings and
/// brackets (`{{ {'a': 'x'}.a }}` is one tag).
pub fn unbounded(source: &str) -> Option<String> {
    let b = source.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"{#") {
            i = find(b, i + 2, b"#}").map_or(b.len(), |e| e + 2);
            continue;
        }
        let statement = b[i..].starts_with(b"{%");
        if !(statement || b[i..].starts_with(b"{{")) {
            i += 1;
            continue;
        }
        let close: &[u8] = if statement { b"%}" } else { b"}}" };
        i += 2;
        // Whitespace control right after the opening delimiter.
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let mut words = Vec::new();
        let mut depth = 0usize;
        while i < b.len() && !(depth == 0 && b[i..].starts_with(close)) {
            match b[i] {
                q @ (b'\'' | b'"') => {
                    i = past_string(b, i, q);
                    continue;
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                // Whitespace control right before the closing delimiter.
                b'+' | b'-' if depth == 0 && b[i + 1..].starts_with(close) => {}
                c => {
                    if let Some((_, why)) = OPERATORS.iter().find(|(op, _)| *op == c) {
                        return Some(why.to_string());
                    }
                }
            }
            words.push(b[i]);
            i += 1;
        }
        i += close.len();
        if statement {
            let text = String::from_utf8_lossy(&words).into_owned();
            let word = text
                .trim_matches(|c: char| c.is_whitespace() || c == '-' || c == '+')
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .next()
                .unwrap_or("")
                .to_owned();
            if !STATEMENTS.contains(&word.as_str()) {
                return Some(format!(
                    "the `{word}` statement (only {} may be used: the others bind or \
                     accumulate values)",
                    STATEMENTS.join(", ")
                ));
            }
        }
    }
    None
}

fn find(b: &[u8], from: usize, what: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(what.len())
        .position(|w| w == what)
        .map(|p| p + from)
}

/// The index past the string literal that starts at `i`.
fn past_string(b: &[u8], mut i: usize, quote: u8) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The environment templates render in: strict about undefined fields,
/// fuelled, and with only the filters and tests that cannot grow a value
/// past the size of their input.
fn environment(json: bool) -> Environment<'static> {
    use minijinja::{filters as f, tests as t};
    let mut env = Environment::empty();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    bounded(&mut env, "lower", f::lower);
    bounded(&mut env, "upper", f::upper);
    bounded(&mut env, "title", f::title);
    bounded(&mut env, "capitalize", f::capitalize);
    bounded(&mut env, "trim", f::trim);
    bounded(&mut env, "length", f::length);
    bounded(&mut env, "count", f::length);
    bounded(&mut env, "default", f::default);
    bounded(&mut env, "d", f::default);
    bounded(&mut env, "first", f::first);
    bounded(&mut env, "last", f::last);
    bounded(&mut env, "string", f::string);
    bounded(&mut env, "int", f::int);
    bounded(&mut env, "float", f::float);
    bounded(&mut env, "round", f::round);
    bounded(&mut env, "abs", f::abs);
    bounded(&mut env, "tojson", f::tojson);
    bounded(&mut env, "urlencode", f::urlencode);
    env.add_test("defined", t::is_defined);
    env.add_test("undefined", t::is_undefined);
    env.add_test("none", t::is_none);
    env.add_test("string", t::is_string);
    env.add_test("number", t::is_number);
    env.add_test("startingwith", t::is_startingwith);
    env.add_test("endingwith", t::is_endingwith);
    env.add_test("eq", t::is_eq);
    env.add_test("ne", t::is_ne);
    env.set_formatter(move |out, state, value| format(out, state, value, json));
    env
}

/// Registers filter `f` so that it refuses an input, and a result, of more
/// than [`MAX_BODY`] bytes: chained (`x|urlencode|urlencode|…`), a filter
/// that grows its input would otherwise grow it exponentially before any
/// byte is written.
fn bounded<F, Rv, Args>(env: &mut Environment<'static>, name: &'static str, f: F)
where
    F: minijinja::functions::Function<Rv, Args>,
    Rv: minijinja::value::FunctionResult,
    Args: for<'a> minijinja::value::FunctionArgs<'a>,
{
    let inner = Value::from_function(f);
    let too_large = move |what: &str| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("`{name}` {what} more than {MAX_BODY} bytes"),
        )
    };
    env.add_filter(
        name,
        move |state: &State, args: minijinja::value::Rest<Value>| {
            let input: usize = args.iter().map(size).sum();
            if input > MAX_BODY {
                return Err(too_large("was given"));
            }
            let out = inner.call(state, &args)?;
            if size(&out) > MAX_BODY {
                return Err(too_large("would give"));
            }
            Ok(out)
        },
    );
}

/// About how many bytes `v` holds, counted no further than past
/// [`MAX_BODY`].
fn size(v: &Value) -> usize {
    match v.kind() {
        ValueKind::String => v.as_str().map_or(0, str::len),
        ValueKind::Bytes => v.as_bytes().map_or(0, <[u8]>::len),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            let mut total = 0;
            for item in v.try_iter().into_iter().flatten() {
                total += size(&item) + 8;
                if v.kind() == ValueKind::Map {
                    total += v.get_item(&item).map_or(0, |x| size(&x));
                }
                if total > MAX_BODY {
                    break;
                }
            }
            total
        }
        _ => 8,
    }
}

/// Prints `value`: for a JSON body, a string's characters JSON-escaped (the
/// template supplies the quotes) and a list or map as JSON.
fn format(out: &mut Output, _: &State, value: &Value, json: bool) -> Result<(), minijinja::Error> {
    let io = |e: std::fmt::Error| minijinja::Error::from(e);
    if !json || value.is_safe() {
        return write!(out, "{value}").map_err(io);
    }
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => Ok(()),
        ValueKind::String => {
            let quoted = serde_json::to_string(value.as_str().unwrap_or_default())
                .map_err(|_| io(std::fmt::Error))?;
            out.write_str(&quoted[1..quoted.len() - 1]).map_err(io)
        }
        ValueKind::Seq | ValueKind::Map => {
            if size(value) > MAX_BODY {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("a value of more than {MAX_BODY} bytes"),
                ));
            }
            let text = serde_json::to_string(value).map_err(|_| io(std::fmt::Error))?;
            out.write_str(&text).map_err(io)
        }
        _ => write!(out, "{value}").map_err(io),
    }
}

/// A writer that refuses to grow past [`MAX_BODY`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_BODY {
            return Err(std::io::Error::other(format!(
                "the body would be more than {MAX_BODY} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `source` rendered with `event`'s fields, JSON-escaped when `json`.
pub fn render(source: &str, event: &serde_json::Value, json: bool) -> Result<String, String> {
    if let Some(why) = unbounded(source) {
        return Err(format!("template: it uses {why}"));
    }
    let env = environment(json);
    let template = env
        .template_from_str(source)
        .map_err(|e| format!("template: {e}"))?;
    let mut out = Capped(Vec::new());
    template.render_captured_to(event, &mut out).map_err(|e| {
        match std::error::Error::source(&e) {
            Some(why) => format!("template: {e}: {why}"),
            None => format!("template: {e}"),
        }
    })?;
    out.flush().map_err(|e| format!("template: {e}"))?;
    String::from_utf8(out.0).map_err(|_| "template: the body is not UTF-8".into())
}

/// Does `content_type` say the body is JSON (`application/json`,
/// `application/vnd.x+json`, `text/json`)?
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.ends_with("/json") || essence.ends_with("+json")
}

#[cfg(test)]
mod tests;
