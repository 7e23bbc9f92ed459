//! A configuration problem says where it is (file, site, field) and what is
//! wrong. Loading collects every problem instead of stopping at the first, so
//! an operator fixes a broken config in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

/// Which site a problem belongs to. A site without a usable name is named by
/// its position in its file, so the operator can still find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteRef {
    Named(String),
    Index(usize),
}

impl fmt::Display for SiteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteRef::Named(name) => write!(f, "site \"{name}\""),
            SiteRef::Index(i) => write!(f, "sites[{i}] (no valid name)"),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the bad value came from (the main file for settings that the
    /// environment may have overridden).
    pub file: PathBuf,
    pub site: Option<SiteRef>,
    /// Dotted key path, e.g. `kafka.sasl.password` or `interval`.
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            site: None,
            field: None,
            message: message.into(),
        }
    }

    pub fn field(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            field: Some(field.into()),
            ..Problem::file(file, message)
        }
    }

    pub fn site(
        file: &Path,
        site: &SiteRef,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            file: file.to_path_buf(),
            site: Some(site.clone()),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(site) = &self.site {
            write!(f, ": {site}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "configuration has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
