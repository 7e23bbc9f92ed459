//! The public status page (`[status_page]`): which sites it lists, under
//! which groups and display names, and how often its data is re-read.
//!
//! ```toml
//! [status_page]
//! enabled = true
//! title = "Example status"
//! sites = ["example-home"]                 # listed without a group
//! [[status_page.groups]]
//! name = "API"
//! sites = ["api-eu", { site = "api-us", display_name = "API (US)" }]
//! ```
//!
//! Only the sites listed here are shown, and of each only its name (which
//! its badge URLs carry), its display name and, with `show_urls`, its URL.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::problem::Problem;
use super::site::Site;

/// Longest title, description or display name (characters).
const MAX_TEXT: usize = 200;

/// The `[status_page]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatusPage {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_title")]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub show_urls: bool,
    #[serde(default = "default_refresh", deserialize_with = "duration::de")]
    pub refresh: Duration,
    #[serde(default)]
    pub sites: Vec<RawEntry>,
    #[serde(default)]
    pub groups: Vec<RawGroup>,
}

impl Default for RawStatusPage {
    fn default() -> Self {
        RawStatusPage {
            enabled: false,
            title: default_title(),
            description: String::new(),
            show_urls: false,
            refresh: default_refresh(),
            sites: Vec::new(),
            groups: Vec::new(),
        }
    }
}

fn default_title() -> String {
    "Status".to_owned()
}
fn default_refresh() -> Duration {
    Duration::from_secs(30)
}

/// `[[status_page.groups]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: String,
    #[serde(default)]
    pub sites: Vec<RawEntry>,
}

/// A listed site: its name, or `{ site, display_name }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawEntry {
    Name(String),
    Table(RawListed),
}

/// `{ site, display_name }` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListed {
    site: String,
    display_name: Option<String>,
}

/// The status page as loaded: every listed site exists in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusPage {
    pub enabled: bool,
    pub title: String,
    pub description: String,
    /// Show each site's URL (off by default: a URL can say more than the
    /// operator means to publish).
    pub show_urls: bool,
    /// Data is re-read from Postgres at most this often; also the
    /// `Cache-Control: max-age` of every page and badge.
    pub refresh: Duration,
    /// In page order; the ungrouped sites (`status_page.sites`) first, as a
    /// group without a name.
    pub groups: Vec<Group>,
}

/// A group of listed sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `None` for the ungrouped sites.
    pub name: Option<String>,
    pub sites: Vec<Listed>,
}

/// One listed site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The site's `name` in the config.
    pub site: String,
    /// What the page shows (the site's name when not given).
    pub display_name: String,
}

impl StatusPage {
    /// Every listed site, in page order.
    pub fn listed(&self) -> impl Iterator<Item = &Listed> {
        self.groups.iter().flat_map(|g| g.sites.iter())
    }
}

/// Checks the section against the sites; problems name
/// `status_page.groups[i].sites[j]` and the like.
pub fn build(
    raw: &RawStatusPage,
    file: &Path,
    sites: &[Site],
    problems: &mut Vec<Problem>,
) -> StatusPage {
    let mut bad = |field: String, msg: String| problems.push(Problem::field(file, field, msg));
    for (key, value) in [("title", &raw.title), ("description", &raw.description)] {
        if let Err(e) = text(value) {
            bad(format!("status_page.{key}"), e);
        }
    }
    if raw.refresh < Duration::from_secs(1) || raw.refresh > Duration::from_secs(3600) {
        bad(
            "status_page.refresh".into(),
            "must be between 1s and 1h".into(),
        );
    }
    let known: HashSet<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut entries = |list: &[RawEntry], at: &str, bad: &mut dyn FnMut(String, String)| {
        let mut out = Vec::new();
        for (j, e) in list.iter().enumerate() {
            let field = format!("{at}.sites[{j}]");
            let (site, display) = match e {
                RawEntry::Name(s) => (s, None),
                RawEntry::Table(t) => (&t.site, t.display_name.as_ref()),
            };
            if !known.contains(site.as_str()) {
                bad(field, format!("no site named {site:?} in the config"));
                continue;
            }
            if !seen.insert(site.clone()) {
                bad(field, format!("{site:?} is listed twice"));
                continue;
            }
            if let Some(Err(e)) = display.map(|d| text(d)) {
                bad(format!("{field}.display_name"), e);
                continue;
            }
            let display_name = display.filter(|d| !d.trim().is_empty()).unwrap_or(site);
            out.push(Listed {
                site: site.clone(),
                display_name: display_name.trim().to_owned(),
            });
        }
        out
    };
    let mut groups = Vec::new();
    let mut group_names: HashSet<&str> = HashSet::new();
    let ungrouped = entries(&raw.sites, "status_page", &mut bad);
    if !ungrouped.is_empty() {
        groups.push(Group {
            name: None,
            sites: ungrouped,
        });
    }
    for (i, g) in raw.groups.iter().enumerate() {
        let at = format!("status_page.groups[{i}]");
        if g.name.trim().is_empty() {
            bad(format!("{at}.name"), "is empty".into());
        } else if let Err(e) = text(&g.name) {
            bad(format!("{at}.name"), e);
        }
        if !group_names.insert(g.name.trim()) {
            bad(
                format!("{at}.name"),
                format!("{:?} names two groups", g.name.trim()),
            );
        }
        if g.sites.is_empty() {
            bad(format!("{at}.sites"), "lists no site".into());
        }
        let sites = entries(&g.sites, &at, &mut bad);
        groups.push(Group {
            name: Some(g.name.trim().to_owned()),
            sites,
        });
    }
    if raw.enabled && seen.is_empty() {
        bad(
            "status_page.sites".into(),
            "the status page is enabled but lists no site (list names in `sites` or `[[status_page.groups]]`)".into(),
        );
    }
    StatusPage {
        enabled: raw.enabled,
        title: raw.title.trim().to_owned(),
        description: raw.description.trim().to_owned(),
        show_urls: raw.show_urls,
        refresh: raw.refresh,
        groups,
    }
}

/// Text shown on the page: bounded, one line, no control characters and
/// no invisible formatting (zero-width spaces, bidirectional overrides that
/// make text read differently from what it is: Unicode TR 36, 3.2).
fn text(s: &str) -> Result<(), String> {
    if s.chars().count() > MAX_TEXT {
        return Err(format!("is longer than {MAX_TEXT} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("holds a control character (a newline, a tab ...)".into());
    }
    let invisible = |c: char| {
        matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
    };
    if let Some(c) = s.chars().find(|c| invisible(*c)) {
        return Err(format!(
            "holds an invisible formatting character (U+{:04X})",
            c as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::{load_with_env, ConfigErrors, Settings};

    fn load(text: &str) -> Result<Settings, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sitewatch.toml");
        std::fs::write(&path, text).unwrap();
        load_with_env(&path, HashMap::new())
    }

    const SITES: &str = r#"
[[sites]]
name = "home"
url = "https://example.com/"
[[sites]]
name = "api"
url = "https://api.example.com/health"
"#;

    #[test]
    fn groups_and_display_names_load_in_page_order() {
        let s = load(&format!(
            r#"
[status_page]
enabled = true
title = "Example status"
sites = ["home"]
[[status_page.groups]]
name = "API"
sites = [{{ site = "api", display_name = "Public API" }}]
{SITES}"#
        ))
        .unwrap();
        let p = &s.status_page;
        assert!(p.enabled && !p.show_urls);
        assert_eq!(p.refresh, std::time::Duration::from_secs(30));
        let listed: Vec<(&str, &str)> = p
            .listed()
            .map(|l| (l.site.as_str(), l.display_name.as_str()))
            .collect();
        assert_eq!(listed, [("home", "home"), ("api", "Public API")]);
        assert_eq!(p.groups[0].name, None);
        assert_eq!(p.groups[1].name.as_deref(), Some("API"));
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (
                r#"sites = ["nope"]"#,
                "status_page.sites[0]",
                "no site named",
            ),
            (
                r#"sites = ["home", "home"]"#,
                "status_page.sites[1]",
                "listed twice",
            ),
            (
                "sites = [\"home\"]\n[[status_page.groups]]\nname = \"\"\nsites = [\"api\"]",
                "status_page.groups[0].name",
                "is empty",
            ),
            (
                "sites = [{ site = \"home\", display_name = \"a\\nb\" }]",
                "status_page.sites[0].display_name",
                "control character",
            ),
            (
                "sites = [\"home\"]\nrefresh = \"0s\"",
                "status_page.refresh",
                "between",
            ),
            ("", "status_page.sites", "lists no site"),
        ];
        for (section, field, words) in cases {
            let text = format!("[status_page]\nenabled = true\n{section}\n{SITES}");
            let errors = load(&text).expect_err(section);
            let shown = errors.to_string();
            assert!(
                errors.0.iter().any(|p| p.field.as_deref() == Some(field)),
                "{section}: {shown}"
            );
            assert!(shown.contains(words), "{section}: {shown}");
        }
        let unknown = load(&format!("[status_page]\ncolour = \"red\"\n{SITES}")).unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        let typo = "[status_page]\nsites = [{ site = \"home\", display = \"x\" }]";
        assert!(
            load(&format!("{typo}\n{SITES}")).is_err(),
            "a misspelt key is refused"
        );
    }
}
