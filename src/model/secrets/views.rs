//! Decoded views of a text, for the secret filter: a server may escape any
//! subset of a secret's characters (Go's html/template writes `+` as
//! `&#43;`, Handlebars `=` as `&#x3D;`, Python's `quote` keeps `/`, Go's
//! encoding/json writes `&` as `\u0026`), which no list of whole encoded
//! forms covers. Each view undoes one layer of HTML character references,
//! percent escapes and JSON backslash escapes at once, and remembers, for
//! every byte, the span of the original text it came from; a secret found
//! in a view is redacted over that span.

/// Which escapes a layer undoes. Each family alone too: undoing JSON's `\/`
/// would hide a secret that holds a backslash from the HTML layer.
#[derive(Clone, Copy)]
pub struct Escapes {
    pub html: bool,
    pub percent: bool,
    pub json: bool,
    /// `+` is a space (form encoding).
    pub plus: bool,
}

impl Escapes {
    const ALL: Escapes = Escapes {
        html: true,
        percent: true,
        json: true,
        plus: false,
    };
    const NONE: Escapes = Escapes {
        html: false,
        percent: false,
        json: false,
        plus: false,
    };

    /// The first layers tried; each is then decoded once more with all.
    pub const LAYERS: [Escapes; 5] = [
        Escapes::ALL,
        Escapes {
            html: true,
            ..Escapes::NONE
        },
        Escapes {
            percent: true,
            ..Escapes::NONE
        },
        Escapes {
            percent: true,
            plus: true,
            ..Escapes::NONE
        },
        Escapes {
            json: true,
            ..Escapes::NONE
        },
    ];
    pub const SECOND: Escapes = Escapes::ALL;
}

/// A text decoded one layer or more: its bytes, and for each byte the
/// span of the original text it came from.
pub struct View {
    pub bytes: Vec<u8>,
    pub from: Vec<(usize, usize)>,
}

/// Bytes that start an escape: a text without any needs no view.
pub fn has_escapes(text: &str) -> bool {
    text.bytes()
        .any(|b| matches!(b, b'%' | b'&' | b'\\' | b'+'))
}

impl View {
    /// `text` as it is.
    pub fn of(text: &str) -> View {
        View {
            bytes: text.as_bytes().to_vec(),
            from: (0..text.len()).map(|i| (i, i + 1)).collect(),
        }
    }

    /// One layer of `escapes` undone; `None` when nothing changed.
    pub fn decoded(&self, escapes: Escapes) -> Option<View> {
        let b = &self.bytes;
        let mut out = View {
            bytes: Vec::with_capacity(b.len()),
            from: Vec::with_capacity(b.len()),
        };
        let mut changed = false;
        let mut i = 0;
        while i < b.len() {
            let (decoded, used) = match b[i] {
                b'%' if escapes.percent => percent(&b[i..]),
                b'&' if escapes.html => reference(&b[i..]),
                b'\\' if escapes.json => backslash(&b[i..]),
                b'+' if escapes.plus => (Some(vec![b' ']), 1),
                _ => (None, 1),
            };
            let span = (self.from[i].0, self.from[i + used - 1].1);
            match decoded {
                Some(bytes) => {
                    changed = true;
                    for byte in bytes {
                        out.bytes.push(byte);
                        out.from.push(span);
                    }
                }
                None => {
                    out.bytes.push(b[i]);
                    out.from.push(self.from[i]);
                }
            }
            i += used;
        }
        changed.then_some(out)
    }
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

/// `%HH`.
fn percent(b: &[u8]) -> (Option<Vec<u8>>, usize) {
    match (
        b.get(1).copied().and_then(hex),
        b.get(2).copied().and_then(hex),
    ) {
        (Some(h), Some(l)) => (Some(vec![(h * 16 + l) as u8]), 3),
        _ => (None, 1),
    }
}

fn utf8(c: char) -> Vec<u8> {
    c.to_string().into_bytes()
}

/// `&#NNN;`, `&#xHH;` and the named references of the characters HTML
/// escapes.
fn reference(b: &[u8]) -> (Option<Vec<u8>>, usize) {
    let end = match b.iter().take(12).position(|&c| c == b';') {
        Some(e) => e,
        None => return (None, 1),
    };
    let name = &b[1..end];
    let c = match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        [b'#', b'x' | b'X', digits @ ..] => std::str::from_utf8(digits)
            .ok()
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .and_then(char::from_u32),
        [b'#', digits @ ..] => std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .and_then(char::from_u32),
        _ => None,
    };
    match c {
        Some(c) => (Some(utf8(c)), end + 1),
        None => (None, 1),
    }
}

/// JSON's escapes: `\uXXXX` (pairs of surrogates too), `\/`, `\"`, `\\`,
/// `\'`, and the control characters.
fn backslash(b: &[u8]) -> (Option<Vec<u8>>, usize) {
    let simple = |c: u8| (Some(vec![c]), 2);
    match b.get(1) {
        Some(b'u') => {
            let unit = |at: usize| -> Option<u32> {
                let digits = b.get(at..at + 4)?;
                u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
            };
            let Some(first) = unit(2) else {
                return (None, 1);
            };
            if (0xD800..0xDC00).contains(&first) && b.get(6..8) == Some(b"\\u") {
                if let Some(second) = unit(8).filter(|s| (0xDC00..0xE000).contains(s)) {
                    let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                    if let Some(c) = char::from_u32(c) {
                        return (Some(utf8(c)), 12);
                    }
                }
            }
            match char::from_u32(first) {
                Some(c) => (Some(utf8(c)), 6),
                None => (None, 1),
            }
        }
        Some(&c @ (b'/' | b'"' | b'\\' | b'\'')) => simple(c),
        Some(b'n') => simple(b'\n'),
        Some(b't') => simple(b'\t'),
        Some(b'r') => simple(b'\r'),
        _ => (None, 1),
    }
}
