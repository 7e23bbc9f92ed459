//! libpq's TLS options in `postgres.url`, which the driver (tokio-postgres)
//! does not take: `sslmode` with libpq's `verify-ca` and `verify-full`,
//! `sslrootcert`, `sslcert` and `sslkey`. They are read here, taken out of
//! what the driver gets, and applied by `store`'s TLS connector, in both
//! forms libpq reads: a URL (`postgres://…?sslmode=verify-full`) and
//! `key=value` words (`host=db sslmode=verify-full`).
//!
//! One difference from libpq, on purpose: `require` verifies the server's
//! certificate and name as `verify-full` does (libpq's `require` does not
//! verify at all); `verify-ca` verifies the certificate only.

use std::path::PathBuf;

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// libpq's `allow` and `prefer`: TLS when the server offers it.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<SslMode, String> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }

    /// Whether the server's host name is checked against its certificate.
    pub fn verifies_host(self) -> bool {
        !matches!(self, SslMode::VerifyCa)
    }
}

/// The TLS options of a `postgres.url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// `sslrootcert`: the CA(s) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: the client's certificate and key (PEM).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `url` into what the driver reads and the TLS options. `Err` says
/// what is wrong with an option (never echoing the URL, which may hold a
/// password).
pub fn split(url: &str) -> Result<(String, PgTls), String> {
    let mut tls = PgTls::default();
    let mut take = |key: &str, value: String| -> Result<(), String> {
        match key {
            "sslmode" => tls.mode = SslMode::parse(&value)?,
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(value)),
            "sslcert" => tls.cert = Some(PathBuf::from(value)),
            _ => tls.key = Some(PathBuf::from(value)),
        }
        Ok(())
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let mut kept = Vec::new();
        for (k, v) in parsed.query_pairs() {
            if OURS.contains(&k.as_ref()) {
                take(&k, v.into_owned())?;
            } else {
                kept.push((k.into_owned(), v.into_owned()));
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        parsed.to_string()
    } else {
        let mut kept = Vec::new();
        for (key, value, raw) in words(url)? {
            if OURS.contains(&key.as_str()) {
                take(&key, value)?;
            } else {
                kept.push(raw);
            }
        }
        kept.join(" ")
    };
    if tls.cert.is_some() != tls.key.is_some() {
        return Err("sslcert and sslkey go together: give both or neither".into());
    }
    Ok((rest, tls))
}

/// libpq's `key = value` words: (key, value, the word as written).
fn words(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            return Ok(out);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("{key:?} has no `=` and a value"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("the value of {key:?} is not closed")),
                    },
                    Some((_, '\'')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("the value of {key:?} is not closed")),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, e)) = chars.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(text.len(), |(i, _)| *i);
        out.push((key, value, text[start..end].trim_end().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_form_gives_the_driver_the_rest() {
        let (rest, tls) = split(
            "postgres://u:p%40ss@db.example:5432/x?sslmode=verify-full&sslrootcert=%2Fca.pem\
             &application_name=a&sslcert=/c.pem&sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%40ss@db.example:5432/x?application_name=a"
        );
        assert_eq!(
            tls,
            PgTls {
                mode: SslMode::VerifyFull,
                root_cert: Some("/ca.pem".into()),
                cert: Some("/c.pem".into()),
                key: Some("/k.pem".into()),
            }
        );
        let (rest, tls) = split("postgresql://db/x?sslmode=verify-ca").unwrap();
        assert_eq!(
            (rest.as_str(), tls.mode),
            ("postgresql://db/x", SslMode::VerifyCa)
        );
        assert!(!tls.mode.verifies_host());
    }

    #[test]
    fn the_word_form_keeps_the_other_words_as_written() {
        let (rest, tls) = split(
            r"host=db  sslmode = 'verify-full' password='it\'s' sslrootcert='/a b/ca.pem' dbname=x",
        )
        .unwrap();
        assert_eq!(rest, r"host=db password='it\'s' dbname=x");
        assert_eq!(tls.root_cert, Some("/a b/ca.pem".into()));
        assert_eq!(tls.mode, SslMode::VerifyFull);
    }

    #[test]
    fn bad_options_are_named() {
        for (url, says) in [
            ("postgres://db/x?sslmode=verify", "sslmode \"verify\""),
            ("postgres://db/x?sslcert=/c.pem", "sslcert and sslkey"),
            ("host=db sslmode", "has no `=`"),
            ("host=db sslrootcert='/x", "not closed"),
        ] {
            let e = split(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
