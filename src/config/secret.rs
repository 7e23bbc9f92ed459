//! Secrets (passwords, key passphrases) are held in a type that never prints
//! its value: not in `Debug`, not in errors, not in logs. They can be given
//! inline (usually through the environment) or read from a file, which suits
//! systemd credentials and Kubernetes secrets mounted as files.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The only way to read the value: call sites that hand it to a client
    /// library are easy to find by name.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file, dropping one trailing newline (editors and
    /// `echo` add it; no password ends in one).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        Ok(Secret(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Resolves a secret given either inline or as a file; both at once is a
/// mistake worth reporting rather than guessing which one wins.
pub fn resolve(
    inline: Option<&Secret>,
    file: Option<&Path>,
    inline_key: &str,
    file_key: &str,
) -> Result<Option<Secret>, (String, String)> {
    match (inline, file) {
        (Some(_), Some(_)) => Err((
            inline_key.to_owned(),
            format!("set either `{inline_key}` or `{file_key}`, not both"),
        )),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => Secret::from_file(path)
            .map(Some)
            .map_err(|e| (file_key.to_owned(), e)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn file_secret_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "s3cret");
    }

    #[test]
    fn both_inline_and_file_is_an_error() {
        let s = Secret::new("x");
        let err = resolve(
            Some(&s),
            Some(Path::new("/nope")),
            "password",
            "password_file",
        );
        assert_eq!(err.unwrap_err().0, "password");
    }
}
